"""gotstate-persist-examples: one small extension per category, installable by entry point.

- ``event_processing``: :class:`~gotstate_persist_examples.throttle.Throttle`
  (entry point ``throttle``)
- ``state_behavior``: :class:`~gotstate_persist_examples.audit.Audit`
  (entry point ``audit``)
- ``persistence``: :class:`~gotstate_persist_examples.scratch.Scratch`
  (entry point ``scratch``)
- ``configuration``: :class:`~gotstate_persist_examples.defaults.SiteDefaults`
  (entry point ``site-defaults``)

Installed, each registers by its entry-point name::

    store.extensions.register("throttle")

This module imports none of them: a worker imports this package's
``__init__`` before the extension's module, so it stays empty.
"""
