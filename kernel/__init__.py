"""The shared kernel: errors, files, locks, sealing, addresses, the cache and the database
watchdog, admin building blocks and log filters. It imports no app of the project."""
