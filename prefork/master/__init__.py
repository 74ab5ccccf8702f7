"""The master's effects: the select loop (``_loop.Master``) and all it does to the OS.

Its bring-up and tear-down (``_bringup``: bind, preload, close), its children (``_children``:
forking workers and templates, their pids and channels, signalling and reaping them; the
templates' side ``_template``, their links ``_templates``), forking and reaping and the
worker's side after fork (``_process``, ``_child``), signals
(``_signals``), the worker channels (``_channels``), listening sockets (``_sockets``), the pid
file, sd_notify, logging, what ``prefork serve`` does before the master starts (``_setup``,
``_pyconfig``, ``_app_check``), the watcher of ``--reload`` (``_watch``), and ``Broker``, a
worker type as the user's code sees it.
Every decision is the core's: this package turns the world into events and performs the
actions it gets back.

It may import ``ops`` (the console it holds), ``core``, and the public ``config`` and
``worker``; never ``http`` or ``load``, which build on it.
"""
