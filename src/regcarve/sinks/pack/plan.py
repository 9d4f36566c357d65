"""Which images go into which volume: whole images only, images that share blobs kept together, each
volume's tar no larger than the volume size.

The cost of an image in a volume is what it adds there: the blobs the volume does not hold yet (and
the far side lacks), plus its link files. Groups of images that share blobs are placed largest first,
each image into the volume where it adds least (best fit on ties), so sharers land together and a
group is split only when it does not fit one volume. An image larger than a volume is refused, or, when
asked (`split_oversize`), gets a volume of its own that is written cut into byte parts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from regcarve.sinks.base import ImageOut
from regcarve.sinks.pack.layout import END_OF_ARCHIVE, blob_digests, blob_path, entry_bytes, links, manifest_digests


@dataclass
class ImageNeeds:
    image: ImageOut
    index: int  # its place in the run's order
    shipped: dict[str, int]  # digest → size: what the volume must hold (manifests always; others unless expected)
    expected: dict[str, str]  # digest → the earlier delivery said to hold it
    link_bytes: int  # its link files in a tar (counted as if no other image shared them)


@dataclass
class VolumePlan:
    number: int
    images: list[ImageNeeds] = field(default_factory=list)
    blobs: dict[str, int] = field(default_factory=dict)  # digest → size, what it stores
    estimate: int = END_OF_ARCHIVE  # an upper bound of its tar's size
    oversize: bool = False  # one image larger than a volume: written cut into byte parts

    def added(self, needs: ImageNeeds) -> int:
        new = (entry_bytes(blob_path(d), size) for d, size in needs.shipped.items() if d not in self.blobs)
        return sum(new) + needs.link_bytes

    def take(self, needs: ImageNeeds, added: int) -> None:
        self.images.append(needs)
        self.blobs.update(needs.shipped)
        self.estimate += added

    @property
    def expected(self) -> dict[str, str]:
        return {d: src for n in self.images for d, src in n.expected.items()}


@dataclass
class Plan:
    volumes: list[VolumePlan]
    too_big: list[tuple[ImageNeeds, int]]  # an image that alone exceeds the room of a volume, and its size

    @property
    def duplicated_bytes(self) -> int:
        """Blob bytes stored in more than one volume, beyond their first copy."""
        stored = sum(size for v in self.volumes for size in v.blobs.values())
        unique = {d: size for v in self.volumes for d, size in v.blobs.items()}
        return stored - sum(unique.values())


def image_needs(image: ImageOut, index: int, sizes: dict[str, int], held: dict[str, str]) -> ImageNeeds:
    """What the image asks of a volume. `held`: blobs the far side has, by the delivery that says so."""
    shipped = {d: sizes[d] for d in manifest_digests(image)}
    expected = {}
    for d in blob_digests(image):
        if d in held:
            expected[d] = held[d]
        else:
            shipped[d] = sizes[d]
    link_bytes = sum(entry_bytes(link.path, len(link.data)) for link in links(image))
    return ImageNeeds(image, index, shipped, expected, link_bytes)


def _groups(needs: list[ImageNeeds]) -> list[list[ImageNeeds]]:
    """Images joined by any shared shipped blob (union-find), in order of first appearance."""
    parent = list(range(len(needs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[str, int] = {}
    for i, n in enumerate(needs):
        for d in n.shipped:
            j = owner.setdefault(d, i)
            parent[find(i)] = find(j)
    groups: dict[int, list[ImageNeeds]] = {}
    for i, n in enumerate(needs):
        groups.setdefault(find(i), []).append(n)
    return list(groups.values())


def plan_volumes(needs: list[ImageNeeds], room: int, split_oversize: bool = False) -> Plan:
    """Volumes whose estimated tar size stays within `room` bytes (but the oversize ones, when asked for)."""
    volumes: list[VolumePlan] = []
    too_big: list[tuple[ImageNeeds, int]] = []
    empty = VolumePlan(0)
    groups = _groups(needs)
    alone = {id(n): empty.added(n) for n in needs}
    group_size = [sum(alone[id(n)] for n in g) for g in groups]
    for _, group in sorted(zip(group_size, groups), key=lambda p: (-p[0], p[1][0].index)):
        for n in sorted(group, key=lambda n: (-alone[id(n)], n.index)):
            if alone[id(n)] + END_OF_ARCHIVE > room:
                if split_oversize:  # its own volume: no other image can fit beside it
                    volumes.append(VolumePlan(len(volumes) + 1, oversize=True))
                    volumes[-1].take(n, alone[id(n)])
                else:
                    too_big.append((n, alone[id(n)] + END_OF_ARCHIVE))
                continue
            best: tuple[int, int, VolumePlan] | None = None
            for v in volumes:
                added = v.added(n)
                if v.estimate + added <= room and (best is None or (added, room - v.estimate - added) < best[:2]):
                    best = (added, room - v.estimate - added, v)
            if best is None:
                volumes.append(VolumePlan(len(volumes) + 1))
                volumes[-1].take(n, alone[id(n)])
            else:
                best[2].take(n, best[0])
    for v in volumes:
        v.images.sort(key=lambda n: n.index)
    return Plan(volumes, too_big)
