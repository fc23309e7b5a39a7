from hpte.cli.main import main

main()
