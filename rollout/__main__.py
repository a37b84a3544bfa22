from rollout.adapters.cli import main

main()
