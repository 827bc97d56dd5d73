from eport.firmware_sim.cli import main

main()
