"""The client kit: what every E-port client shares (language, output, exit codes, errors and
their funnel, PIN entry, files, the daemon client). The `eport` command modules, the subsystem
clients, the doctor and the gateway import it; nothing imports the `eport` command modules."""
