from regcarve.cli import main

main()
