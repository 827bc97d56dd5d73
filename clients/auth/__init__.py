"""`eport auth`: authorization (委托授权) through the data centre."""
