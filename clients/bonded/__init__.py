"""`eport bonded`: bonded verification (保税核查) through the data centre."""
