from rollout.adapters.cli.main import main

main()
