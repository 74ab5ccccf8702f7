"""The decision core: every lifecycle decision and the data it works on, pure.

The supervisor (``_supervisor``: events in, actions out, ``next_deadline()``) and the pieces
it decides with (``_commands``: reload, drain, resume, scale, stop; ``_workforce``: spawn,
stop, kill and the reconciler; ``_templating``: the templates' readiness and exits), what it
holds (``_ledger``: the records of brokers and workers and every question asked of them;
``_roster``: policies, records, worker states and their deadlines; ``_rolling``: a rolling
replacement; ``_templates``: a broker's templates by generation),
events and actions (``_events``), crash-loop backoff (``_backoff``), how an exit is told
(``_exits``), status snapshots (``_status``), the master <-> worker frames (``_frames``), how an
option is declared and checked (``_options``), which changes ``--reload`` counts and when
(``_reload``), the supervisor's records as plain data for an in-place upgrade
(``_handover``), and the payloads the API hands out (``_payloads``).

It may import nothing from prefork outside ``core``, and nothing that touches the OS (no os,
socket, signal, time, selectors, asyncio...): time comes in as ``now``, effects go out as
actions. ``tests/unit/test_layout.py`` holds it to that.
"""
