"""What operators use: the control socket (its protocol, its server, where it is) and ``prefork
ctl`` with its views, the metric store, the Prometheus exposition and its endpoint, the small
bounded servers in the master's select loop (``_side``), and the console that holds them.

It may import ``core`` and the public ``config``; never the master: what the console needs of
the OS (binding sockets, reading ``/proc``) is passed in by the master (``_console.Host``).
"""
