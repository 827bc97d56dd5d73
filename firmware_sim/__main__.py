import sys

from eport.firmware_sim.cli import main

sys.exit(main())
