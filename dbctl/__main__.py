from dbctl.cli import main

main()
