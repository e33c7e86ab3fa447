"""Call records: what happened in each call, for the app, the operator and the next call.

``model`` is pure (the record, its end reasons, its JSON); ``store`` keeps records on the directory's
SQLAlchemy engine (schema through Alembic migrations, ``migrate``); ``recorder`` turns a session's events
(``events``) into incremental writes; ``webhook`` signs and delivers the end-of-call report; ``summary``
bounds the memory a verified user's next call gets. The worker writes, the token service and the CLI read.
"""

from __future__ import annotations
