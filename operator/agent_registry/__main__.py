from agent_registry.cli import main

main()
