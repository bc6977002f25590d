from collector.cli.app import main

main()
