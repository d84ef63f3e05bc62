-- The demo app's schema. Every statement is idempotent: run at each start.

-- Page views with a cap: views never exceeds cap (the CHECK is the last line of defence).
CREATE TABLE IF NOT EXISTS pages(
    name  TEXT PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 64),
    views INTEGER NOT NULL DEFAULT 0,
    cap   INTEGER NOT NULL CHECK (cap >= 0),
    CHECK (views <= cap)
);
CREATE TABLE IF NOT EXISTS page_views(
    id   INTEGER PRIMARY KEY,
    page TEXT NOT NULL REFERENCES pages(name),
    at   REAL NOT NULL              -- unix time
);
CREATE INDEX IF NOT EXISTS page_views_at ON page_views(at);
-- Filled by helpers/rollup.py from page_views (which it then prunes).
CREATE TABLE IF NOT EXISTS hourly_views(
    page  TEXT NOT NULL,
    hour  INTEGER NOT NULL,         -- unix time // 3600
    views INTEGER NOT NULL,
    PRIMARY KEY (page, hour)
);

-- Accounts and bets. An overdraft is refused by the CHECK on balance.
CREATE TABLE IF NOT EXISTS accounts(
    id      INTEGER PRIMARY KEY,
    name    TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 64),
    balance INTEGER NOT NULL CHECK (balance >= 0)
);
CREATE TABLE IF NOT EXISTS matches(
    id        INTEGER PRIMARY KEY,
    name      TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
    status    TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed', 'settled')),
    winner    TEXT,                 -- set when closed
    closed_at REAL
);
CREATE TABLE IF NOT EXISTS bets(
    id        INTEGER PRIMARY KEY,
    ticket    TEXT UNIQUE,          -- the write-behind ticket, when placed that way
    account   INTEGER NOT NULL REFERENCES accounts(id),
    match     INTEGER NOT NULL REFERENCES matches(id),
    pick      TEXT NOT NULL CHECK (length(pick) BETWEEN 1 AND 64),
    stake     INTEGER NOT NULL CHECK (stake > 0),
    placed_at REAL NOT NULL,
    payout    INTEGER               -- set by helpers/settlement.py
);
CREATE INDEX IF NOT EXISTS bets_match ON bets(match);
