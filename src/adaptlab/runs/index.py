"""An embedded SQLite index of runs, for `adaptlab runs`."""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path


class RunIndex:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS runs (name TEXT PRIMARY KEY, study TEXT, dir TEXT,"
                       " started TEXT, finished TEXT, status TEXT, metrics TEXT)")

    def _db(self):
        return sqlite3.connect(self.path, timeout=30)

    def start(self, name: str, study: str, dir: str) -> None:
        with self._db() as db:
            db.execute("INSERT INTO runs (name, study, dir, started, status, metrics) VALUES"
                       " (?, ?, ?, ?, 'running', '{}') ON CONFLICT(name) DO UPDATE SET"
                       " status='running', started=excluded.started, study=excluded.study",
                       (name, study, dir, time.strftime("%Y-%m-%d %H:%M:%S")))

    def finish(self, name: str, metrics: dict) -> None:
        with self._db() as db:
            db.execute("UPDATE runs SET status='done', finished=?, metrics=? WHERE name=?",
                       (time.strftime("%Y-%m-%d %H:%M:%S"), json.dumps(metrics), name))

    def list(self) -> list[dict]:
        if not self.path.exists():
            return []
        with self._db() as db:
            rows = db.execute("SELECT name, study, dir, started, finished, status, metrics"
                              " FROM runs ORDER BY started DESC").fetchall()
        keys = ("name", "study", "dir", "started", "finished", "status", "metrics")
        return [dict(zip(keys, r[:6] + (json.loads(r[6] or "{}"),))) for r in rows]
