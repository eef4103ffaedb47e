from zmqfail.cli.main import main

main()
