"""The database schema, as an append-only list of migrations.

``Database.open`` applies the ones a database has not seen yet, in order, each in its own
transaction together with the ``user_version`` bump.
"""

from __future__ import annotations

# Each entry upgrades the schema by one version; never edit a shipped entry, append one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        platform TEXT NOT NULL,
        platform_user_id TEXT NOT NULL,
        display_name TEXT NOT NULL DEFAULT '',
        locale TEXT,
        created_at REAL NOT NULL,
        UNIQUE (platform, platform_user_id)
    );
    CREATE TABLE requests (
        id TEXT PRIMARY KEY,
        source_key TEXT NOT NULL UNIQUE,
        user_id INTEGER NOT NULL REFERENCES users(id),
        line TEXT NOT NULL,
        image BLOB NOT NULL,
        image_width INTEGER NOT NULL,
        image_height INTEGER NOT NULL,
        address TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        request_id TEXT NOT NULL REFERENCES requests(id),
        user_id INTEGER NOT NULL REFERENCES users(id),
        platform TEXT NOT NULL,
        take INTEGER NOT NULL,
        takes INTEGER NOT NULL,
        state TEXT NOT NULL,
        fair_round INTEGER NOT NULL,
        line TEXT NOT NULL,
        speech TEXT NOT NULL,
        language TEXT NOT NULL,
        seconds INTEGER NOT NULL,
        seed INTEGER NOT NULL,
        voice TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        handle TEXT,
        resubmitted INTEGER NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_expires REAL NOT NULL DEFAULT 0,
        not_before REAL NOT NULL DEFAULT 0,
        deadline_at REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        error_key TEXT,
        error_params TEXT NOT NULL DEFAULT '{}',
        error_detail TEXT,
        result_path TEXT
    );
    CREATE UNIQUE INDEX jobs_seq ON jobs (seq);
    CREATE INDEX jobs_waiting ON jobs (platform, fair_round, seq) WHERE state = 'queued';
    CREATE INDEX jobs_active ON jobs (state, lease_expires)
        WHERE state NOT IN ('queued', 'done', 'failed', 'canceled');
    CREATE INDEX jobs_by_user ON jobs (user_id, state);
    CREATE INDEX jobs_by_request ON jobs (request_id);
    CREATE TABLE scheduler (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        current_round INTEGER NOT NULL
    );
    INSERT INTO scheduler (id, current_round) VALUES (1, 0);
    """,
    # Chat adapters' own state (core/storage/sqlite/chats.py): the inbox of platform events stored
    # before anything else happens, remembered photos, button ids, language, history.
    """
    CREATE TABLE chat_inbox (
        platform TEXT NOT NULL,
        key TEXT NOT NULL,
        payload TEXT NOT NULL,
        first_reply TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        received_at REAL NOT NULL,
        done_at REAL,
        PRIMARY KEY (platform, key)
    );
    CREATE INDEX chat_inbox_open ON chat_inbox (platform, received_at) WHERE done_at IS NULL;
    CREATE TABLE chat_photos (
        platform TEXT NOT NULL,
        chat_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        file_ref TEXT,
        request_id TEXT,
        message_id TEXT,
        updated_at REAL NOT NULL,
        PRIMARY KEY (platform, chat_id, user_id)
    );
    CREATE TABLE chat_buttons (
        id TEXT PRIMARY KEY,
        platform TEXT NOT NULL,
        action TEXT NOT NULL,
        request_id TEXT NOT NULL,
        job_id TEXT,
        owner TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE chat_prefs (
        platform TEXT NOT NULL,
        user_id TEXT NOT NULL,
        locale TEXT,
        PRIMARY KEY (platform, user_id)
    );
    CREATE TABLE chat_history (
        platform TEXT NOT NULL,
        user_id TEXT NOT NULL,
        job_id TEXT NOT NULL,
        chat_id TEXT NOT NULL,
        file_ref TEXT NOT NULL,
        caption TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (platform, job_id)
    );
    CREATE INDEX chat_history_by_user ON chat_history (platform, user_id, created_at);
    """,
    # Quotas and fair order (core/quotas.py, core/storage/sqlite/accounts.py). An account is
    # one person: several platform identities (users) may share it after /link. The triggers
    # kept the per-account counters and paid refunds on every path into FAILED/CANCELED
    # (until migration 6 replaced them with code).
    # jobs.fair_round and scheduler.current_round are unused from here on: the start order
    # is the accounts' round-robin tickets (see SqliteJobs.claim).
    """
    CREATE TABLE accounts (
        id INTEGER PRIMARY KEY,
        role TEXT NOT NULL DEFAULT 'user',
        access TEXT NOT NULL DEFAULT 'none',  -- none | pending | allowed | denied
        banned_until REAL,                    -- NULL: not banned
        ban_reason TEXT,
        ticket INTEGER NOT NULL DEFAULT 0,    -- round-robin place: the smallest starts next
        turn_used INTEGER NOT NULL DEFAULT 0, -- takes started in the current turn
        weight INTEGER NOT NULL DEFAULT 1,    -- takes per turn, from the role
        max_in_flight INTEGER NOT NULL DEFAULT 1000000000,
        queued INTEGER NOT NULL DEFAULT 0,    -- waiting takes (triggers)
        in_flight INTEGER NOT NULL DEFAULT 0, -- submitting + running takes (triggers)
        created_at REAL NOT NULL
    );
    INSERT INTO accounts (id, ticket, created_at) SELECT id, id, created_at FROM users;
    ALTER TABLE users ADD COLUMN account_id INTEGER REFERENCES accounts(id);
    UPDATE users SET account_id = id;
    CREATE INDEX users_by_account ON users (account_id);
    ALTER TABLE jobs ADD COLUMN account_id INTEGER REFERENCES accounts(id);
    UPDATE jobs SET account_id = user_id;
    CREATE INDEX jobs_by_account ON jobs (account_id, state, seq);
    CREATE INDEX jobs_finished ON jobs (finished_at) WHERE state = 'done';
    UPDATE accounts SET
        queued = (SELECT count(*) FROM jobs WHERE account_id = accounts.id AND state = 'queued'),
        in_flight = (SELECT count(*) FROM jobs WHERE account_id = accounts.id
                     AND state IN ('submitting', 'running'));
    CREATE INDEX accounts_waiting ON accounts (ticket) WHERE queued > 0;
    ALTER TABLE scheduler ADD COLUMN next_ticket INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE scheduler ADD COLUMN queued INTEGER NOT NULL DEFAULT 0;
    UPDATE scheduler SET
        next_ticket = (SELECT coalesce(max(id), 0) + 1 FROM accounts),
        queued = (SELECT count(*) FROM jobs WHERE state = 'queued');
    CREATE TABLE balances (
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        period TEXT NOT NULL,
        credits INTEGER NOT NULL CHECK (credits >= 0),
        PRIMARY KEY (account_id, period)
    ) WITHOUT ROWID;
    CREATE TABLE ledger (
        id INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        period TEXT NOT NULL,
        delta INTEGER NOT NULL,
        reason TEXT NOT NULL,  -- allowance | debit | refund | grant | revoke
        job_id TEXT,
        actor TEXT,
        note TEXT,
        created_at REAL NOT NULL
    );
    CREATE INDEX ledger_by_account ON ledger (account_id, period);
    CREATE UNIQUE INDEX ledger_by_job ON ledger (job_id, reason) WHERE job_id IS NOT NULL;
    CREATE TABLE chat_days (
        platform TEXT NOT NULL,
        chat_id TEXT NOT NULL,
        day TEXT NOT NULL,
        takes INTEGER NOT NULL,
        PRIMARY KEY (platform, chat_id, day)
    ) WITHOUT ROWID;
    CREATE TABLE link_codes (
        code TEXT PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        platform TEXT NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE TRIGGER jobs_count_new AFTER INSERT ON jobs BEGIN
        UPDATE accounts SET queued = queued + (new.state = 'queued'),
            in_flight = in_flight + (new.state IN ('submitting', 'running'))
        WHERE id = new.account_id;
        UPDATE scheduler SET queued = queued + 1 WHERE id = 1 AND new.state = 'queued';
    END;
    CREATE TRIGGER jobs_count_moved AFTER UPDATE OF state ON jobs
    WHEN old.state IS NOT new.state BEGIN
        UPDATE accounts SET queued = queued + (new.state = 'queued') - (old.state = 'queued'),
            in_flight = in_flight + (new.state IN ('submitting', 'running'))
                - (old.state IN ('submitting', 'running'))
        WHERE id = new.account_id;
        UPDATE scheduler SET queued = queued + (new.state = 'queued') - (old.state = 'queued')
        WHERE id = 1 AND (new.state = 'queued') != (old.state = 'queued');
    END;
    CREATE TRIGGER jobs_count_gone AFTER DELETE ON jobs BEGIN
        UPDATE accounts SET queued = queued - (old.state = 'queued'),
            in_flight = in_flight - (old.state IN ('submitting', 'running'))
        WHERE id = old.account_id;
        UPDATE scheduler SET queued = queued - 1 WHERE id = 1 AND old.state = 'queued';
    END;
    -- Refund a take that failed (any failure, after its last retry) or was canceled before
    -- it started, into the period it was charged in. The WHEN clause and the unique index
    -- on (job_id, reason) make it pay at most once, whatever path changed the state.
    CREATE TRIGGER jobs_refund AFTER UPDATE OF state ON jobs
    WHEN (new.state = 'failed' AND old.state NOT IN ('done', 'failed', 'canceled'))
      OR (new.state = 'canceled' AND old.state = 'queued') BEGIN
        INSERT OR IGNORE INTO ledger (account_id, period, delta, reason, job_id, created_at)
            SELECT account_id, period, -delta, 'refund', job_id,
                (julianday('now') - 2440587.5) * 86400.0
            FROM ledger WHERE job_id = new.id AND reason = 'debit';
        UPDATE balances SET credits = credits
            - (SELECT delta FROM ledger WHERE job_id = new.id AND reason = 'debit')
        WHERE changes() > 0 AND (account_id, period) =
            (SELECT account_id, period FROM ledger WHERE job_id = new.id AND reason = 'debit');
    END;
    """,
    # Refunds keyed on the take itself: a job records what it was charged and when, and
    # the refund trigger pays that back once and zeroes it. This replaces the unique index
    # on ledger.job_id, a write at a random place in an index for every admitted take.
    """
    ALTER TABLE jobs ADD COLUMN charged INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN charge_period TEXT;
    UPDATE jobs SET
        charged = -(SELECT delta FROM ledger d WHERE d.job_id = jobs.id AND d.reason = 'debit'),
        charge_period = (SELECT period FROM ledger d WHERE d.job_id = jobs.id
                         AND d.reason = 'debit')
    WHERE id IN (SELECT job_id FROM ledger WHERE reason = 'debit')
      AND id NOT IN (SELECT job_id FROM ledger WHERE reason = 'refund' AND job_id IS NOT NULL);
    DROP TRIGGER jobs_refund;
    DROP INDEX ledger_by_job;
    -- Refund a take that failed (any failure, after its last retry) or was canceled before
    -- it started, into the period it was charged in, at most once whatever path changed
    -- the state. (Updating jobs.charged does not fire triggers "OF state".)
    CREATE TRIGGER jobs_refund AFTER UPDATE OF state ON jobs
    WHEN new.charged > 0
      AND ((new.state = 'failed' AND old.state NOT IN ('done', 'failed', 'canceled'))
        OR (new.state = 'canceled' AND old.state = 'queued')) BEGIN
        UPDATE balances SET credits = credits + new.charged
        WHERE account_id = new.account_id AND period = new.charge_period;
        INSERT INTO ledger (account_id, period, delta, reason, job_id, created_at)
        VALUES (new.account_id, new.charge_period, new.charged, 'refund', new.id,
                (julianday('now') - 2440587.5) * 86400.0);
        UPDATE jobs SET charged = 0 WHERE id = new.id;
    END;
    """,
    # Several takes delivered as one group (claim_group): the worker that claimed
    # it. A claim counts only while that worker holds a live lease on one of the takes.
    """
    ALTER TABLE requests ADD COLUMN group_owner TEXT;
    """,
    # A take whose upload left but whose answer never came (a read timeout): it ends DONE,
    # marked so, rather than being sent again or refunded (core/finishing.py).
    """
    ALTER TABLE jobs ADD COLUMN delivery_unconfirmed INTEGER NOT NULL DEFAULT 0;
    """,
    # Durable job events (core/storage/sqlite/changes.py): a row for every change of a job,
    # written in the change's transaction; ``seq`` is the cursor events are followed by.
    # Counters and refunds are no longer triggers: the same code writes them, in the same
    # transaction, so that every engine does visibly the same. Existing jobs get one
    # 'imported' event with the state they have now.
    """
    CREATE TABLE job_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        job_id TEXT NOT NULL,
        request_id TEXT NOT NULL,
        state TEXT NOT NULL,
        error_key TEXT,
        at REAL NOT NULL
    );
    CREATE INDEX job_events_by_request ON job_events (request_id, seq);
    INSERT INTO job_events (kind, job_id, request_id, state, error_key, at)
        SELECT 'imported', id, request_id, state, error_key, updated_at FROM jobs ORDER BY seq;
    DROP TRIGGER jobs_count_new;
    DROP TRIGGER jobs_count_moved;
    DROP TRIGGER jobs_count_gone;
    DROP TRIGGER jobs_refund;
    """,
    # Hosted providers: the preset (or builtin backend) a take is on, for fallback across
    # presets and per-preset run times; and why a finished take failed its check, once its
    # free re-take was started (core/finishing.py).
    """
    ALTER TABLE jobs ADD COLUMN backend TEXT;
    ALTER TABLE jobs ADD COLUMN retake_reason TEXT;
    """,
    # Fencing for leases across processes: every claim or takeover raises the token, and a
    # worker's state change names the token it holds, so a worker whose lease expired and
    # was taken over changes nothing (core/storage/sqlite/changes.py).
    """
    ALTER TABLE jobs ADD COLUMN lease_token INTEGER NOT NULL DEFAULT 0;
    """,
    # Characters (core/storage/sqlite/characters.py): an account's saved cast. The prepared
    # image is stored once per content (sha256) and deleted with its last character.
    """
    CREATE TABLE character_images (
        sha256 TEXT PRIMARY KEY,
        jpeg BLOB NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL
    );
    CREATE TABLE characters (
        id INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        name TEXT NOT NULL,
        name_key TEXT NOT NULL,
        image_sha256 TEXT NOT NULL REFERENCES character_images(sha256),
        voice TEXT,
        seed INTEGER,
        description TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        UNIQUE (account_id, name_key)
    );
    CREATE INDEX characters_by_image ON characters (image_sha256);
    CREATE TABLE character_shares (
        character_id INTEGER NOT NULL REFERENCES characters(id) ON DELETE CASCADE,
        platform TEXT NOT NULL,
        chat_id TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (character_id, platform, chat_id)
    );
    CREATE INDEX character_shares_by_chat ON character_shares (platform, chat_id);
    """,
    # Per-guild settings of a community's admins (core/storage/sqlite/chats.py): the
    # channels the bot answers in (a JSON list, empty: all) and a daily cap of takes,
    # counted per local day in guild_takes.
    """
    CREATE TABLE guild_settings (
        platform TEXT NOT NULL,
        guild_id TEXT NOT NULL,
        allowed_channels TEXT NOT NULL DEFAULT '[]',
        daily_cap INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (platform, guild_id)
    ) WITHOUT ROWID;
    CREATE TABLE guild_takes (
        platform TEXT NOT NULL,
        guild_id TEXT NOT NULL,
        day TEXT NOT NULL,
        takes INTEGER NOT NULL,
        PRIMARY KEY (platform, guild_id, day)
    ) WITHOUT ROWID;
    """,
    # Voice samples (core/voices.py): a character's voice note, normalized WAV stored once
    # per content and deleted with its last character, with the voice ids providers made
    # from it (Kling's create-voice: one per sample and model, claimed by the take making
    # it, its request handle kept before anything waits on it). A take keeps the sample it
    # was cast with.
    """
    CREATE TABLE voice_samples (
        sha256 TEXT PRIMARY KEY,
        wav BLOB NOT NULL,
        seconds REAL NOT NULL
    );
    ALTER TABLE characters ADD COLUMN voice_sample TEXT REFERENCES voice_samples(sha256);
    CREATE INDEX characters_by_voice_sample ON characters (voice_sample);
    CREATE TABLE provider_voices (
        sample_sha256 TEXT NOT NULL REFERENCES voice_samples(sha256),
        provider TEXT NOT NULL,
        model TEXT NOT NULL,
        state TEXT NOT NULL,
        owner TEXT NOT NULL,
        handle TEXT,
        voice_id TEXT,
        updated_at REAL NOT NULL,
        PRIMARY KEY (sample_sha256, provider, model)
    );
    ALTER TABLE jobs ADD COLUMN voice_sample TEXT;
    """,
    # Portraits (core/storage/sqlite/portraits.py): candidate images drawn from a
    # description for a new character. The row is debited at once (``charged``, refunded
    # once on failure); the model's handle is committed right after the submit, and
    # ``submitting`` marks a submit that may have left, so that it is looked up, never
    # sent twice. Candidates are kept until one is picked or they expire.
    """
    CREATE TABLE portraits (
        id TEXT PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        name TEXT NOT NULL,
        description TEXT NOT NULL,
        prompt TEXT NOT NULL,
        preset TEXT NOT NULL,
        address TEXT NOT NULL,
        state TEXT NOT NULL,
        handle TEXT,
        charged INTEGER NOT NULL DEFAULT 0,
        charge_period TEXT,
        error_key TEXT,
        picked INTEGER,
        shown INTEGER NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_expires REAL NOT NULL DEFAULT 0,
        submitted_at REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX portraits_with_work ON portraits (lease_expires) WHERE shown = 0;
    CREATE INDEX portraits_ready ON portraits (updated_at) WHERE state = 'ready';
    CREATE TABLE portrait_candidates (
        portrait_id TEXT NOT NULL REFERENCES portraits(id) ON DELETE CASCADE,
        number INTEGER NOT NULL,
        jpeg BLOB NOT NULL,
        PRIMARY KEY (portrait_id, number)
    );
    """,
    # Two-stage presets (core/backend_phase.py): how far a take's submits got ('speech':
    # the speech submit may have left, 'video': the video submit may have), and the
    # speech job's handle and result (its audio's URL), each committed before the next step.
    """
    ALTER TABLE jobs ADD COLUMN stage TEXT;
    ALTER TABLE jobs ADD COLUMN speech_handle TEXT;
    ALTER TABLE jobs ADD COLUMN speech_result TEXT;
    """,
    # Takes of a line (bots/chat/actions.py): how many takes a line has had, counted
    # atomically as each further take of it is admitted, so that takes asked at once get
    # numbers of their own. Keyed by the line's first request.
    """
    CREATE TABLE line_takes (
        platform TEXT NOT NULL,
        request_id TEXT NOT NULL,
        takes INTEGER NOT NULL,
        PRIMARY KEY (platform, request_id)
    ) WITHOUT ROWID;
    """,
)
