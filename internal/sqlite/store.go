// Package sqlite is the embedded gust.BillingStore: metering records in
// one SQLite file (pure-Go driver, WAL journal), a table of call records
// and a table of instance records, both keyed by their id so that adding
// a record twice changes nothing. It is the only package that links the
// SQLite driver; pricing the usage sums it returns is internal/billing's.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/billing"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	_ "modernc.org/sqlite" // database/sql driver "sqlite"
)

// writerCacheKiB is the page cache of the writing connection: the hot
// pages of the call id index and of the time-ordered indexes of a busy
// store.
const writerCacheKiB = 64 << 10

// walCheckpointPages is the WAL size, in pages, past which a commit
// copies it back into the database file (PRAGMA wal_autocheckpoint).
const walCheckpointPages = 10000

// busyTimeout is how long a connection waits for a lock held by another
// connection or process before it fails with SQLITE_BUSY.
const busyTimeout = 5 * time.Second

// migrations bring the schema from version i to i+1 (PRAGMA user_version).
// Append only: a released migration never changes.
var migrations = []string{
	// 0 → 1: calls and instances.
	`CREATE TABLE calls (
		call_id     TEXT    NOT NULL PRIMARY KEY,
		namespace   TEXT    NOT NULL,
		function    TEXT    NOT NULL,
		version     INTEGER NOT NULL,
		image       TEXT    NOT NULL,
		worker      TEXT    NOT NULL,
		instance    TEXT    NOT NULL,
		trigger_type TEXT   NOT NULL,
		start_ns    INTEGER NOT NULL,
		end_ns      INTEGER NOT NULL,
		duration_ns INTEGER NOT NULL,
		billed_ns   INTEGER NOT NULL,
		memory_mib  INTEGER NOT NULL,
		cold_start  INTEGER NOT NULL,
		init_ns     INTEGER NOT NULL,
		status      INTEGER NOT NULL,
		outcome     TEXT    NOT NULL,
		bytes_in    INTEGER NOT NULL,
		bytes_out   INTEGER NOT NULL
	);
	CREATE INDEX calls_start ON calls (start_ns);
	CREATE INDEX calls_function_start ON calls (namespace, function, start_ns);
	CREATE TABLE instances (
		instance   TEXT    NOT NULL PRIMARY KEY,
		namespace  TEXT    NOT NULL,
		function   TEXT    NOT NULL,
		worker     TEXT    NOT NULL,
		memory_mib INTEGER NOT NULL,
		ready_ns   INTEGER NOT NULL,
		stopped_ns INTEGER NOT NULL
	);
	CREATE INDEX instances_ready ON instances (ready_ns);
	CREATE INDEX instances_function_ready ON instances (namespace, function, ready_ns);`,
	// 1 → 2: the caller's own X-Call-Id, which need not be unique.
	`ALTER TABLE calls ADD COLUMN caller_id TEXT NOT NULL DEFAULT '';
	CREATE INDEX calls_caller ON calls (caller_id, start_ns) WHERE caller_id != '';`,
	// 2 → 3: indexes in the order of the invocation listing (start, call id,
	// both descending) after each filter's equality columns, so that every
	// page seeks to its cursor and reads no more than a page, whatever the
	// filters: none, namespace, namespace and function, function alone,
	// outcome (namespace and outcome use one of the first or the outcome's;
	// a further index for them would cost every insert). They replace the
	// indexes on start and on (namespace, function, start), of which they
	// are extensions. The outcome index leaves out the calls that went
	// well, most of them: every insert would pay for it, and a listing of
	// those reads the start index, where nearly every row matches.
	`DROP INDEX IF EXISTS calls_start;
	DROP INDEX IF EXISTS calls_function_start;
	CREATE INDEX IF NOT EXISTS calls_start_id ON calls (start_ns, call_id);
	CREATE INDEX IF NOT EXISTS calls_namespace_start_id ON calls (namespace, start_ns, call_id);
	CREATE INDEX IF NOT EXISTS calls_namespace_function_start_id ON calls (namespace, function, start_ns, call_id);
	CREATE INDEX IF NOT EXISTS calls_function_start_id ON calls (function, start_ns, call_id);
	CREATE INDEX IF NOT EXISTS calls_outcome_start_id ON calls (outcome, start_ns, call_id) WHERE outcome <> 'ok';`,
	// 3 → 4: rollups (internal/billing's): sums of calls per hour and per
	// day, and of instances per hour, backfilled from the records. start_ns
	// is the bucket's start, so that the reports' filters and time groups
	// read a rollup as they read the records. The primary keys lead with
	// the time, as a month-wide report reads them; the second index serves
	// the reports of one namespace or function.
	`CREATE TABLE call_hours (` + callRollupColumnsDDL + `) WITHOUT ROWID;
	CREATE INDEX call_hours_function ON call_hours (namespace, function, start_ns);
	CREATE TABLE call_days (` + callRollupColumnsDDL + `) WITHOUT ROWID;
	CREATE INDEX call_days_function ON call_days (namespace, function, start_ns);
	CREATE TABLE instance_hours (
		start_ns   INTEGER NOT NULL,
		namespace  TEXT    NOT NULL,
		function   TEXT    NOT NULL,
		memory_mib INTEGER NOT NULL,
		instances  INTEGER NOT NULL,
		held_ns    INTEGER NOT NULL,
		PRIMARY KEY (start_ns, namespace, function, memory_mib)
	) WITHOUT ROWID;
	INSERT INTO call_hours (` + callRollupColumns + `)
		SELECT start_ns - ((start_ns % 3600000000000) + 3600000000000) % 3600000000000,
			namespace, function, outcome, memory_mib, COUNT(*), SUM(cold_start), SUM(duration_ns),
			SUM(billed_ns), SUM(memory_mib * (billed_ns / 1000))
		FROM calls GROUP BY 1, 2, 3, 4, 5;
	INSERT INTO call_days (` + callRollupColumns + `)
		SELECT start_ns - ((start_ns % 86400000000000) + 86400000000000) % 86400000000000,
			namespace, function, outcome, memory_mib, SUM(requests), SUM(cold_starts), SUM(duration_ns),
			SUM(billed_ns), SUM(mib_micros)
		FROM call_hours GROUP BY 1, 2, 3, 4, 5;
	INSERT INTO instance_hours (start_ns, namespace, function, memory_mib, instances, held_ns)
		SELECT ready_ns - ((ready_ns % 3600000000000) + 3600000000000) % 3600000000000,
			namespace, function, memory_mib, COUNT(*), SUM(MAX(stopped_ns - ready_ns, 0))
		FROM instances GROUP BY 1, 2, 3, 4;`,
	// 4 → 5: retention. raw_from_ns is the hour from which call records
	// are all kept (Prune deleted earlier ones); one row, 0 before any
	// pruning.
	`CREATE TABLE retention (
		id          INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
		raw_from_ns INTEGER NOT NULL
	);
	INSERT INTO retention (id, raw_from_ns) VALUES (1, 0);`,
	// 5 → 6: the paused tier. paused_ms is the record's PausedMs, as
	// sent; paused_ns in the rollup is Σ its part of held_ns
	// (billing.PausedNs). Records stored before had no pauses: 0 in both
	// is their truth, so nothing is backfilled.
	`ALTER TABLE instances ADD COLUMN paused_ms INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE instance_hours ADD COLUMN paused_ns INTEGER NOT NULL DEFAULT 0;`,
}

// The columns of the call rollup tables, call_hours and call_days.
const (
	callRollupColumnsDDL = `
		start_ns    INTEGER NOT NULL,
		namespace   TEXT    NOT NULL,
		function    TEXT    NOT NULL,
		outcome     TEXT    NOT NULL,
		memory_mib  INTEGER NOT NULL,
		requests    INTEGER NOT NULL,
		cold_starts INTEGER NOT NULL,
		duration_ns INTEGER NOT NULL,
		billed_ns   INTEGER NOT NULL,
		mib_micros  INTEGER NOT NULL,
		PRIMARY KEY (start_ns, namespace, function, outcome, memory_mib)`
	callRollupColumns = `start_ns, namespace, function, outcome, memory_mib,
		requests, cold_starts, duration_ns, billed_ns, mib_micros`
)

// optimizeEvery is how often an open store refreshes the planner's
// statistics (PRAGMA optimize), which decide between the indexes above
// as the table grows.
const optimizeEvery = time.Hour

// analysisLimit bounds the rows ANALYZE reads per index when PRAGMA
// optimize runs it, so that refreshing statistics on a large store takes
// milliseconds rather than a scan of the table.
const analysisLimit = 1000

// Store is a gust.BillingStore in one SQLite file. It is safe for
// concurrent use, also by several processes on the same file.
type Store struct {
	db *sql.DB // reads: listings, lookups, reports
	// wdb is the one connection that writes (inserts, pruning). SQLite
	// takes one writer at a time anyway; a single connection keeps its
	// page cache, sized writerCacheKiB, warm across batches, where the
	// pool handed each batch the connection idle longest, whose cache
	// held none of the index pages a random call id lands on: measured,
	// inserts ran about twice as fast (docs/benchmarks.md).
	wdb    *sql.DB
	logger *zap.Logger

	// stop, called by Close, ends the statistics refresh (and cancels one
	// under way); optimized is closed when it has returned.
	stop      context.CancelFunc
	stopped   context.Context
	optimized chan struct{}
}

var _ gust.PruningStore = (*Store)(nil)

// Open opens or creates the SQLite file at path, brings its schema up to
// date and returns a ready store. A nil logger logs nothing.
func Open(path string, logger *zap.Logger) (*Store, error) {
	if logger == nil {
		logger = zap.NewNop()
	}
	if path == "" {
		return nil, errors.New("open billing db: empty path")
	}
	if strings.ContainsRune(path, '?') {
		// The driver reads everything after '?' as connection parameters.
		return nil, fmt.Errorf("open billing db %s: path must not contain '?'", path)
	}
	// Every pooled connection gets these settings. _txlock=immediate makes
	// a write transaction take the write lock at BEGIN, so concurrent
	// writers wait for each other (busy_timeout) instead of failing when
	// they upgrade a read lock.
	// wal_autocheckpoint: the WAL is copied back into the database every
	// walCheckpointPages pages rather than SQLite's 1000. A page that many
	// batches touch (the hot end of each index, a rollup row) is then
	// written back once per checkpoint instead of once per thousand pages:
	// measured here, with the single writing connection below, inserts of
	// a 10M-a-month store ran about 1.5× faster (docs/benchmarks.md), for
	// a WAL file of up to ~40 MiB.
	dsn := path + "?_busy_timeout=" + strconv.FormatInt(busyTimeout.Milliseconds(), 10) +
		"&_journal_mode=WAL&_synchronous=NORMAL&_txlock=immediate" +
		"&_pragma=wal_autocheckpoint(" + strconv.Itoa(walCheckpointPages) + ")"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open billing db %s: %w", path, err)
	}
	wdb, err := sql.Open("sqlite", dsn+"&_pragma=cache_size(-"+strconv.Itoa(writerCacheKiB)+")")
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open billing db %s: %w", path, err)
	}
	wdb.SetMaxOpenConns(1)
	s := &Store{db: db, wdb: wdb, logger: logger, optimized: make(chan struct{})}
	s.stopped, s.stop = context.WithCancel(context.Background())
	version, err := s.migrate(context.Background())
	if err != nil {
		_ = db.Close()
		_ = wdb.Close()
		return nil, fmt.Errorf("open billing db %s: %w", path, err)
	}
	// A store opened on an existing file (or just migrated) gets
	// statistics for its indexes before the first listing. Without them
	// the store still answers, with plans chosen by SQLite's defaults.
	if err := s.optimize(s.stopped); err != nil {
		logger.Warn("billing store statistics not refreshed", zap.Error(err))
	}
	go s.optimizeLoop()
	logger.Info("billing store open", zap.String("path", path), zap.Int("schema_version", version))
	return s, nil
}

// optimize runs PRAGMA optimize on one connection, with ANALYZE bounded
// by analysisLimit (a per-connection setting). 0x10002 also considers
// tables this connection has not queried: a pooled connection may not
// have.
func (s *Store) optimize(ctx context.Context) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("optimize: %w", err)
	}
	defer func() { _ = conn.Close() }()
	// PRAGMA takes no bound parameters; the value is our own integer.
	if _, err := conn.ExecContext(ctx, fmt.Sprintf(`PRAGMA analysis_limit = %d`, analysisLimit)); err != nil {
		return fmt.Errorf("optimize: set analysis limit: %w", err)
	}
	if _, err := conn.ExecContext(ctx, `PRAGMA optimize=0x10002`); err != nil {
		return fmt.Errorf("optimize: %w", err)
	}
	return nil
}

// optimizeLoop refreshes the statistics every optimizeEvery until Close.
// A failure is logged and retried at the next tick: stale statistics make
// plans worse, not answers wrong.
func (s *Store) optimizeLoop() {
	defer close(s.optimized)
	tick := time.NewTicker(optimizeEvery)
	defer tick.Stop()
	for {
		select {
		case <-s.stopped.Done():
			return
		case <-tick.C:
			if err := s.optimize(s.stopped); err != nil && s.stopped.Err() == nil {
				s.logger.Warn("billing store statistics not refreshed", zap.Error(err))
			}
		}
	}
}

// migrate applies the migrations the file lacks, in one transaction, and
// returns the schema version.
func (s *Store) migrate(ctx context.Context) (int, error) {
	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("begin migration: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	var version int
	if err := tx.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	if version > len(migrations) {
		return 0, fmt.Errorf("schema version %d is newer than this program knows (%d)", version, len(migrations))
	}
	if version == len(migrations) {
		return version, nil
	}
	for i := version; i < len(migrations); i++ {
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			return 0, fmt.Errorf("migrate schema to version %d: %w", i+1, err)
		}
	}
	// PRAGMA takes no bound parameters; the value is our own integer.
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, len(migrations))); err != nil {
		return 0, fmt.Errorf("set schema version: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("commit migration: %w", err)
	}
	return len(migrations), nil
}

// Close stops the statistics refresh and closes the database.
func (s *Store) Close() error {
	s.stop()
	<-s.optimized
	if err := errors.Join(s.wdb.Close(), s.db.Close()); err != nil {
		return fmt.Errorf("close billing db: %w", err)
	}
	return nil
}

// AddCalls implements gust.BillingStore: the batch commits in one
// transaction with the rollups of the records it really inserted;
// records whose call id is already stored are skipped, and so change no
// rollup.
func (s *Store) AddCalls(ctx context.Context, recs []gust.CallRecord) error {
	if len(recs) == 0 {
		return nil
	}
	// A batch whose calls are all new (nearly every one: only a
	// redelivery repeats a call) goes in without RETURNING, a fifth
	// cheaper a record, and the count of rows inserted tells that it was;
	// one that held a call stored already is rolled back and redone with
	// RETURNING, which tells which records to add to the rollups.
	skipped := 0
	added, err := s.write(ctx, func(tx *sql.Tx) (int, error) { return s.addCalls(ctx, tx, recs, false, &skipped) })
	if errors.Is(err, errStoredAlready) {
		added, err = s.write(ctx, func(tx *sql.Tx) (int, error) { return s.addCalls(ctx, tx, recs, true, &skipped) })
	}
	if err != nil {
		return fmt.Errorf("add calls: %w", err)
	}
	if skipped > 0 {
		s.logger.Warn("call records older than the retention horizon left out", zap.Int("records", skipped))
	}
	if ce := s.logger.Check(zapcore.DebugLevel, "calls committed"); ce != nil {
		ce.Write(zap.Int("records", len(recs)), zap.Int("added", added))
	}
	return nil
}

// errStoredAlready rolls back a batch of calls inserted without RETURNING
// that held a call already stored (AddCalls).
var errStoredAlready = errors.New("a call of the batch is stored already")

// addCalls inserts recs (but those from before the retention horizon,
// counted in *skipped) and adds the ones it inserted to the rollups. With
// returning false it fails with errStoredAlready if any was stored
// already, as it cannot tell which.
func (s *Store) addCalls(ctx context.Context, tx *sql.Tx, recs []gust.CallRecord, returning bool, skipped *int) (int, error) {
	// A record from before the retention horizon arrives after its hour
	// was pruned: whether it was counted then cannot be known (its id is
	// gone), so it is left out rather than perhaps counted twice. Only a
	// record older than the retention age, which the store would delete
	// anyway, can be one.
	rawFrom, err := rawFromTx(ctx, tx)
	if err != nil {
		return 0, err
	}
	if rawFrom != 0 {
		kept := recs[:0:0]
		for i := range recs {
			if unixNano(recs[i].Start) >= rawFrom {
				kept = append(kept, recs[i])
			}
		}
		*skipped = len(recs) - len(kept)
		recs = kept
	}
	if len(recs) == 0 {
		return 0, nil
	}
	inserted := recs
	if !returning {
		_, n, err := insertRows(ctx, tx, insertCalls, callRow, ``, len(recs), callArgs(recs))
		if err != nil {
			return 0, err
		}
		if n != int64(len(recs)) {
			return 0, errStoredAlready
		}
	} else {
		ids, _, err := insertRows(ctx, tx, insertCalls, callRow, ` RETURNING call_id`, len(recs), callArgs(recs))
		if err != nil || len(ids) == 0 {
			return 0, err
		}
		// The record of each inserted id: its first in the batch, as the
		// first is the one INSERT OR IGNORE kept.
		inserted = make([]gust.CallRecord, 0, len(ids))
		for i := range recs {
			if _, ok := ids[recs[i].CallID]; ok {
				inserted = append(inserted, recs[i])
				delete(ids, recs[i].CallID)
			}
		}
	}
	for _, t := range []struct {
		table string
		width int64
	}{{"call_hours", billing.HourNs}, {"call_days", billing.DayNs}} {
		if err := upsertCallRollups(ctx, tx, t.table, billing.RollCalls(inserted, t.width)); err != nil {
			return 0, err
		}
	}
	return len(inserted), nil
}

// AddInstances implements gust.BillingStore: the batch commits in one
// transaction with the rollups of the records it really inserted;
// records whose instance id is already stored are skipped.
func (s *Store) AddInstances(ctx context.Context, recs []gust.InstanceRecord) error {
	if len(recs) == 0 {
		return nil
	}
	added, err := s.write(ctx, func(tx *sql.Tx) (int, error) {
		ids, _, err := insertRows(ctx, tx, `INSERT OR IGNORE INTO instances
			(instance, namespace, function, worker, memory_mib, ready_ns, stopped_ns, paused_ms) VALUES `,
			`(?, ?, ?, ?, ?, ?, ?, ?)`, ` RETURNING instance`, len(recs), func(i int) []any {
				r := &recs[i]
				return []any{r.Instance, r.Namespace, r.Function, r.Worker, r.MemoryMiB, unixNano(r.Ready),
					unixNano(r.Stopped), r.PausedMs}
			})
		if err != nil || len(ids) == 0 {
			return 0, err
		}
		inserted := make([]gust.InstanceRecord, 0, len(ids))
		for i := range recs {
			if _, ok := ids[recs[i].Instance]; ok {
				inserted = append(inserted, recs[i])
				delete(ids, recs[i].Instance)
			}
		}
		rows := billing.RollInstances(inserted)
		keys := make([]billing.InstanceRollupKey, 0, len(rows))
		for k := range rows {
			keys = append(keys, k)
		}
		_, _, err = insertRows(ctx, tx, `INSERT INTO instance_hours
			(start_ns, namespace, function, memory_mib, instances, held_ns, paused_ns) VALUES `, `(?, ?, ?, ?, ?, ?, ?)`,
			` ON CONFLICT (start_ns, namespace, function, memory_mib) DO UPDATE SET
				instances = instances + excluded.instances, held_ns = held_ns + excluded.held_ns,
				paused_ns = paused_ns + excluded.paused_ns`,
			len(keys), func(i int) []any {
				k := keys[i]
				r := rows[k]
				return []any{k.StartNs, k.Namespace, k.Function, k.MemoryMiB, r.Instances, r.HeldNs, r.PausedNs}
			})
		return len(inserted), err
	})
	if err != nil {
		return fmt.Errorf("add instances: %w", err)
	}
	if ce := s.logger.Check(zapcore.DebugLevel, "instances committed"); ce != nil {
		ce.Write(zap.Int("records", len(recs)), zap.Int("added", added))
	}
	return nil
}

// upsertCallRollups adds rows to the call rollup table.
func upsertCallRollups(ctx context.Context, tx *sql.Tx, table string, rows map[billing.CallRollupKey]*billing.CallRollup) error {
	keys := make([]billing.CallRollupKey, 0, len(rows))
	for k := range rows {
		keys = append(keys, k)
	}
	_, _, err := insertRows(ctx, tx, `INSERT INTO `+table+` (`+callRollupColumns+`) VALUES `,
		`(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		` ON CONFLICT (start_ns, namespace, function, outcome, memory_mib) DO UPDATE SET
			requests = requests + excluded.requests, cold_starts = cold_starts + excluded.cold_starts,
			duration_ns = duration_ns + excluded.duration_ns, billed_ns = billed_ns + excluded.billed_ns,
			mib_micros = mib_micros + excluded.mib_micros`,
		len(keys), func(i int) []any {
			k := keys[i]
			r := rows[k]
			return []any{k.StartNs, k.Namespace, k.Function, k.Outcome, k.MemoryMiB,
				r.Requests, r.ColdStarts, r.DurationNs, r.BilledNs, r.MiBMicros}
		})
	if err != nil {
		return fmt.Errorf("%s: %w", table, err)
	}
	return nil
}

// write runs fn in one write transaction and commits what it did.
func (s *Store) write(ctx context.Context, fn func(tx *sql.Tx) (int, error)) (int, error) {
	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	n, err := fn(tx)
	if err != nil {
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	return n, nil
}

// rowsPerInsert is how many rows one INSERT statement carries: far
// fewer statements per batch, well under SQLite's bound on parameters.
const rowsPerInsert = 50

// insertRows runs head + row repeated + tail for n rows (each row's
// values from args) in tx, rowsPerInsert to a statement. A tail with a
// RETURNING clause of one text column has insertRows return the values
// it returned (with INSERT OR IGNORE: the ids of the rows inserted);
// otherwise it returns nil ids and the number of rows the statements
// changed (with INSERT OR IGNORE: inserted).
func insertRows(ctx context.Context, tx *sql.Tx, head, row, tail string, n int, args func(i int) []any) (map[string]struct{}, int64, error) {
	returning := strings.Contains(tail, "RETURNING")
	var ids map[string]struct{}
	if returning {
		ids = make(map[string]struct{}, n)
	}
	stmts := map[int]*sql.Stmt{}
	defer func() {
		for _, st := range stmts {
			_ = st.Close()
		}
	}()
	vals := make([]any, 0, rowsPerInsert*strings.Count(row, "?"))
	var changed int64
	for start := 0; start < n; start += rowsPerInsert {
		k := min(rowsPerInsert, n-start)
		stmt := stmts[k]
		if stmt == nil {
			var err error
			q := head + row + strings.Repeat(", "+row, k-1) + tail
			if stmt, err = tx.PrepareContext(ctx, q); err != nil {
				return nil, 0, fmt.Errorf("prepare: %w", err)
			}
			stmts[k] = stmt
		}
		vals = vals[:0]
		for i := start; i < start+k; i++ {
			vals = append(vals, args(i)...)
		}
		if !returning {
			res, err := stmt.ExecContext(ctx, vals...)
			if err != nil {
				return nil, 0, fmt.Errorf("insert rows %d to %d: %w", start, start+k-1, err)
			}
			if c, err := res.RowsAffected(); err == nil {
				changed += c
			}
			continue
		}
		if err := collect(ctx, stmt, vals, ids); err != nil {
			return nil, 0, fmt.Errorf("insert rows %d to %d: %w", start, start+k-1, err)
		}
	}
	return ids, changed, nil
}

// collect runs stmt and adds the one text column of every row it returns
// to into.
func collect(ctx context.Context, stmt *sql.Stmt, vals []any, into map[string]struct{}) error {
	rows, err := stmt.QueryContext(ctx, vals...)
	if err != nil {
		return err
	}
	defer func() { _ = rows.Close() }()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return err
		}
		into[id] = struct{}{}
	}
	return rows.Err()
}

// insertCalls and callRow insert call records; callArgs gives a row's
// values.
const (
	insertCalls = `INSERT OR IGNORE INTO calls (` + callColumns + `) VALUES `
	callRow     = `(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
)

func callArgs(recs []gust.CallRecord) func(i int) []any {
	return func(i int) []any {
		r := &recs[i]
		return []any{
			r.CallID, r.Namespace, r.Function, int64(r.Version), r.Image, r.Worker, r.Instance, r.Trigger,
			unixNano(r.Start), unixNano(r.End), r.DurationNs, r.BilledNs, r.MemoryMiB,
			r.ColdStart, r.InitNs, r.Status, r.Outcome, r.BytesIn, r.BytesOut, r.CallerID,
		}
	}
}

const callColumns = `call_id, namespace, function, version, image, worker, instance, trigger_type,
	start_ns, end_ns, duration_ns, billed_ns, memory_mib, cold_start, init_ns, status, outcome,
	bytes_in, bytes_out, caller_id`

// rowScanner is *sql.Row or *sql.Rows.
type rowScanner interface{ Scan(dest ...any) error }

func scanCall(row rowScanner) (gust.CallRecord, error) {
	var (
		r              gust.CallRecord
		version        int64
		startNs, endNs int64
	)
	err := row.Scan(&r.CallID, &r.Namespace, &r.Function, &version, &r.Image, &r.Worker, &r.Instance, &r.Trigger,
		&startNs, &endNs, &r.DurationNs, &r.BilledNs, &r.MemoryMiB, &r.ColdStart, &r.InitNs, &r.Status, &r.Outcome,
		&r.BytesIn, &r.BytesOut, &r.CallerID)
	if err != nil {
		return gust.CallRecord{}, err
	}
	r.Version = uint64(version)
	r.Start, r.End = fromUnixNano(startNs), fromUnixNano(endNs)
	return r, nil
}

// Call implements gust.BillingStore. An id that is no call id is looked
// up as a caller's X-Call-Id: the latest call that sent it.
func (s *Store) Call(ctx context.Context, callID string) (gust.CallRecord, error) {
	row := s.db.QueryRowContext(ctx, `SELECT `+callColumns+` FROM calls WHERE call_id = ?`, callID)
	r, err := scanCall(row)
	if errors.Is(err, sql.ErrNoRows) {
		row = s.db.QueryRowContext(ctx, `SELECT `+callColumns+` FROM calls WHERE caller_id = ? AND caller_id != ''
			ORDER BY start_ns DESC LIMIT 1`, callID)
		r, err = scanCall(row)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return gust.CallRecord{}, fmt.Errorf("call %s: %w", callID, gust.ErrNotFound)
	}
	if err != nil {
		return gust.CallRecord{}, fmt.Errorf("get call %s: %w", callID, err)
	}
	return r, nil
}

// Calls implements gust.BillingStore. Records come newest first (start
// time, then call id, both descending). The cursor is opaque to callers;
// one that does not decode is an EINVALID error on field "cursor".
func (s *Store) Calls(ctx context.Context, f gust.CallFilter) ([]gust.CallRecord, string, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = billing.DefaultLimit
	}
	query, args, err := callsQuery(f, limit)
	if err != nil {
		return nil, "", err
	}
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, "", fmt.Errorf("list calls: %w", err)
	}
	defer func() { _ = rows.Close() }()
	recs := make([]gust.CallRecord, 0, min(limit, billing.DefaultLimit))
	more := false
	for rows.Next() {
		if len(recs) == limit {
			more = true
			break
		}
		r, err := scanCall(rows)
		if err != nil {
			return nil, "", fmt.Errorf("list calls: scan: %w", err)
		}
		recs = append(recs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("list calls: %w", err)
	}
	next := ""
	if more {
		last := recs[len(recs)-1]
		next = billing.EncodeCursor(unixNano(last.Start), last.CallID)
	}
	return recs, next, nil
}

// callsQuery returns the SQL and arguments of the page of Calls that f
// asks for: limit+1 rows, as one more than a page tells whether another
// page follows.
func callsQuery(f gust.CallFilter, limit int) (string, []any, error) {
	var (
		cursor  bool
		startNs int64
		callID  string
	)
	if f.Cursor != "" {
		var err error
		if startNs, callID, err = billing.DecodeCursor(f.Cursor); err != nil {
			return "", nil, err
		}
		// Of the two upper bounds, the cursor and To, only the lower one
		// goes into the query (either implies the other), so that SQLite
		// seeks the index to it rather than to the other and filters every
		// row in between.
		if f.To.IsZero() || startNs < unixNano(f.To) {
			f.To, cursor = time.Time{}, true
		}
	}
	where, args := filterWhere(f, `start_ns`, true)
	if f.Outcome != "" && f.Outcome != gust.OutcomeOK {
		// Implied by outcome = ?, but SQLite uses the partial outcome
		// index only for a query whose WHERE has its condition.
		where = append(where, `outcome <> 'ok'`)
	}
	if cursor {
		// A row value, not start_ns < ? OR (start_ns = ? AND call_id < ?):
		// SQLite seeks an index on (..., start_ns, call_id) to a row value
		// and reads on from there, where the OR becomes two index
		// searches, their union and a sort of every older row.
		where = append(where, `(start_ns, call_id) < (?, ?)`)
		args = append(args, startNs, callID)
	}
	args = append(args, limit+1)
	return `SELECT ` + callColumns + ` FROM calls` + whereClause(where) +
		` ORDER BY start_ns DESC, call_id DESC LIMIT ?`, args, nil
}

// groupExprs are the SQL expressions of the Usage group keys, on the
// records and on the rollups alike (both have start_ns). Time buckets are
// UTC.
var groupExprs = map[string]string{
	gust.GroupByNamespace: `namespace`,
	gust.GroupByFunction:  `namespace || '/' || function`,
	gust.GroupByHour:      `strftime('%Y-%m-%dT%H:00Z', start_ns / 1000000000, 'unixepoch')`,
	gust.GroupByDay:       `strftime('%Y-%m-%d', start_ns / 1000000000, 'unixepoch')`,
	gust.GroupByMonth:     `strftime('%Y-%m', start_ns / 1000000000, 'unixepoch')`,
}

// Usage implements gust.BillingStore. Calls are selected by f on their
// start time and grouped by (group, namespace), sorted by group then
// namespace; instances are selected by namespace, function and ready time
// (f.Outcome does not apply) and grouped by (namespace, function, memory).
// Whole days and hours of the range are read from the rollups, the
// partial hours at its edges from the records (billing.Spans).
// An unknown groupBy is an EINVALID error on field "group_by".
func (s *Store) Usage(ctx context.Context, f gust.CallFilter, groupBy string) ([]gust.UsageRow, []gust.InstanceUsageRow, error) {
	expr, ok := groupExprs[groupBy]
	if !ok {
		return nil, nil, gust.Invalidf("group_by", "unknown grouping %q: want namespace, function, hour, day or month", groupBy)
	}
	var rawFrom int64
	if err := s.db.QueryRowContext(ctx, `SELECT raw_from_ns FROM retention`).Scan(&rawFrom); err != nil {
		return nil, nil, fmt.Errorf("usage: %w", err)
	}
	spans := billing.Pruned(billing.Spans(f.From, f.To, groupBy != gust.GroupByHour), rawFrom)
	usage, err := s.callUsage(ctx, f, expr, spans)
	if err != nil {
		return nil, nil, err
	}
	inst, err := s.instanceUsage(ctx, f)
	if err != nil {
		return nil, nil, err
	}
	return usage, inst, nil
}

// pruneBatch is how many call records one transaction of Prune deletes:
// small enough that an ingest batch waiting for the write lock waits
// milliseconds.
const pruneBatch = 2000

// Prune implements gust.PruningStore: it first moves the horizon (so
// that reports read rollups below it from then on), then deletes the
// older call records pruneBatch at a time, each batch its own
// transaction. The rollups and the instance records stay.
func (s *Store) Prune(ctx context.Context, before time.Time) (int64, error) {
	h := billing.Bucket(unixNano(before), billing.HourNs)
	if _, err := s.wdb.ExecContext(ctx, `UPDATE retention SET raw_from_ns = MAX(raw_from_ns, ?)`, h); err != nil {
		return 0, fmt.Errorf("prune: %w", err)
	}
	var deleted int64
	for {
		if err := ctx.Err(); err != nil {
			return deleted, fmt.Errorf("prune: %w", err)
		}
		// The start index finds the oldest rows; deleting by rowid keeps
		// each statement to one batch.
		res, err := s.wdb.ExecContext(ctx, `DELETE FROM calls WHERE rowid IN
			(SELECT rowid FROM calls WHERE start_ns < ? ORDER BY start_ns LIMIT ?)`, h, pruneBatch)
		if err != nil {
			return deleted, fmt.Errorf("prune: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return deleted, fmt.Errorf("prune: %w", err)
		}
		deleted += n
		if n < pruneBatch {
			return deleted, nil
		}
	}
}

// RawFrom implements gust.PruningStore.
func (s *Store) RawFrom(ctx context.Context) (time.Time, error) {
	var ns int64
	if err := s.db.QueryRowContext(ctx, `SELECT raw_from_ns FROM retention`).Scan(&ns); err != nil {
		return time.Time{}, fmt.Errorf("retention horizon: %w", err)
	}
	return fromUnixNano(ns), nil
}

func rawFromTx(ctx context.Context, tx *sql.Tx) (int64, error) {
	var ns int64
	if err := tx.QueryRowContext(ctx, `SELECT raw_from_ns FROM retention`).Scan(&ns); err != nil {
		return 0, fmt.Errorf("retention horizon: %w", err)
	}
	return ns, nil
}

// callSums are the sums of callUsage, on the records and on the rollups.
// billed_ns / 1000 is exact: billed durations are whole microseconds (the
// billing granularity is). SUM fails on integer overflow rather than
// wrapping.
var callSums = map[billing.Source]struct{ table, sums string }{
	billing.Raw: {`calls`, `COUNT(*) AS r, SUM(CASE WHEN outcome <> 'ok' THEN 1 ELSE 0 END) AS e, SUM(cold_start) AS c,
		SUM(duration_ns) AS d, SUM(billed_ns) AS b, SUM(memory_mib * (billed_ns / 1000)) AS m`},
	billing.Hours: {`call_hours`, callRollupSums},
	billing.Days:  {`call_days`, callRollupSums},
}

const callRollupSums = `SUM(requests) AS r, SUM(CASE WHEN outcome <> 'ok' THEN requests ELSE 0 END) AS e,
	SUM(cold_starts) AS c, SUM(duration_ns) AS d, SUM(billed_ns) AS b, SUM(mib_micros) AS m`

// callUsage sums the calls of f's filters other than its range over
// spans.
func (s *Store) callUsage(ctx context.Context, f gust.CallFilter, groupExpr string, spans []billing.Span) ([]gust.UsageRow, error) {
	var (
		parts []string
		args  []any
	)
	for _, sp := range spans {
		src := callSums[sp.Source]
		where, a := spanWhere(f, sp, `start_ns`, true)
		parts = append(parts, `SELECT `+groupExpr+` AS grp, namespace, `+src.sums+` FROM `+src.table+
			whereClause(where)+` GROUP BY grp, namespace`)
		args = append(args, a...)
	}
	out := []gust.UsageRow{}
	if len(parts) == 0 {
		return out, nil
	}
	rows, err := s.db.QueryContext(ctx, `SELECT grp, namespace, SUM(r), SUM(e), SUM(c), SUM(d), SUM(b), SUM(m)
		FROM (`+strings.Join(parts, ` UNION ALL `)+`)
		GROUP BY grp, namespace
		ORDER BY grp, namespace`, args...)
	if err != nil {
		return nil, fmt.Errorf("usage: %w", err)
	}
	defer func() { _ = rows.Close() }()
	for rows.Next() {
		var u gust.UsageRow
		if err := rows.Scan(&u.Group, &u.Namespace, &u.Requests, &u.Errors, &u.ColdStarts,
			&u.DurationNs, &u.BilledNs, &u.MiBMicros); err != nil {
			return nil, fmt.Errorf("usage: scan: %w", err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("usage: %w", err)
	}
	return out, nil
}

// heldExpr and pausedExpr are billing.HeldNs and billing.PausedNs of an
// instance record, in SQL: a record whose stop precedes its ready time
// (clock step) holds nothing rather than a negative amount, and its
// paused part is at least none and at most its held time, compared in
// milliseconds before the multiplication (which would overflow past
// it).
const (
	heldExpr   = `MAX(stopped_ns - ready_ns, 0)`
	pausedExpr = `CASE WHEN paused_ms <= 0 THEN 0 WHEN paused_ms > ` + heldExpr + ` / 1000000 THEN ` + heldExpr +
		` ELSE paused_ms * 1000000 END`
)

func (s *Store) instanceUsage(ctx context.Context, f gust.CallFilter) ([]gust.InstanceUsageRow, error) {
	var (
		parts []string
		args  []any
	)
	for _, sp := range billing.Spans(f.From, f.To, false) {
		var where []string
		var a []any
		if sp.Source == billing.Raw {
			where, a = spanWhere(f, sp, `ready_ns`, false)
			parts = append(parts, `SELECT namespace, function, memory_mib, COUNT(*) AS n,
				SUM(`+heldExpr+`) AS held, SUM(`+pausedExpr+`) AS paused FROM instances`+whereClause(where)+
				` GROUP BY namespace, function, memory_mib`)
		} else {
			where, a = spanWhere(f, sp, `start_ns`, false)
			parts = append(parts, `SELECT namespace, function, memory_mib, SUM(instances) AS n, SUM(held_ns) AS held,
				SUM(paused_ns) AS paused FROM instance_hours`+whereClause(where)+` GROUP BY namespace, function, memory_mib`)
		}
		args = append(args, a...)
	}
	out := []gust.InstanceUsageRow{}
	if len(parts) == 0 {
		return out, nil
	}
	rows, err := s.db.QueryContext(ctx, `SELECT namespace, function, memory_mib, SUM(n), SUM(held), SUM(paused)
		FROM (`+strings.Join(parts, ` UNION ALL `)+`)
		GROUP BY namespace, function, memory_mib
		ORDER BY namespace, function, memory_mib`, args...)
	if err != nil {
		return nil, fmt.Errorf("instance usage: %w", err)
	}
	defer func() { _ = rows.Close() }()
	for rows.Next() {
		var u gust.InstanceUsageRow
		if err := rows.Scan(&u.Namespace, &u.Function, &u.MemoryMiB, &u.Instances, &u.HeldNs, &u.PausedNs); err != nil {
			return nil, fmt.Errorf("instance usage: scan: %w", err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("instance usage: %w", err)
	}
	return out, nil
}

// spanWhere returns the conditions and arguments of f's filters with the
// time range of sp (on timeCol) in place of f's own.
func spanWhere(f gust.CallFilter, sp billing.Span, timeCol string, withOutcome bool) ([]string, []any) {
	f.From, f.To = time.Time{}, time.Time{}
	where, args := filterWhere(f, timeCol, withOutcome)
	if sp.From != billing.OpenFrom {
		where, args = append(where, timeCol+` >= ?`), append(args, sp.From)
	}
	if sp.To != billing.OpenTo {
		where, args = append(where, timeCol+` < ?`), append(args, sp.To)
	}
	return where, args
}

// filterWhere returns the conditions and arguments of f's namespace,
// function and [From, To) filters, the time range on timeCol, and of its
// outcome filter if withOutcome.
func filterWhere(f gust.CallFilter, timeCol string, withOutcome bool) ([]string, []any) {
	var (
		where []string
		args  []any
	)
	if f.Namespace != "" {
		where, args = append(where, `namespace = ?`), append(args, f.Namespace)
	}
	if f.Function != "" {
		where, args = append(where, `function = ?`), append(args, f.Function)
	}
	if !f.From.IsZero() {
		where, args = append(where, timeCol+` >= ?`), append(args, unixNano(f.From))
	}
	if !f.To.IsZero() {
		where, args = append(where, timeCol+` < ?`), append(args, unixNano(f.To))
	}
	if withOutcome && f.Outcome != "" {
		where, args = append(where, `outcome = ?`), append(args, f.Outcome)
	}
	return where, args
}

func whereClause(conds []string) string {
	if len(conds) == 0 {
		return ""
	}
	return ` WHERE ` + strings.Join(conds, ` AND `)
}

// unixNano stores a time as Unix nanoseconds; the zero time is 0.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// fromUnixNano is the inverse of unixNano, in UTC.
func fromUnixNano(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}
