from watchlog.cli.main import main

main()
