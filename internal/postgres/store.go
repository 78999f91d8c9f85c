// Package postgres is the gust.BillingStore on a PostgreSQL server, for
// when one embedded SQLite file is not enough: several gateways share one
// store, and operators back it up, query and watch it with their own
// database tools. It keeps what internal/sqlite keeps, with the same
// meaning: call and instance records keyed by their id (adding one twice
// changes nothing), hourly and daily rollups maintained in the inserting
// transaction for the rows really inserted, and reports that read the
// rollups for whole hours and days and the records for the edges
// (internal/billing's RollCalls, RollInstances and Spans: one place for
// that logic), and retention (Prune) that deletes old records and keeps
// their rollups. Its answers equal SQLite's to the unit, group keys and
// order included; internal/billing/storetest checks both. It is the only
// package that links the PostgreSQL driver (pgx).
package postgres

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/billing"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// migrations bring the schema from version i to i+1 (the one row of
// gust_billing_schema). Append only: a released migration never changes.
//
// Every text column is COLLATE "C": byte order, as SQLite's, so that the
// listing's (start_ns, call_id) order, its cursor and the reports' group
// order are the same on both stores, whatever the database's locale.
var migrations = []string{
	// 0 → 1: records, listing indexes and rollups, as SQLite's schema
	// version 4 (see internal/sqlite for why each index is there).
	`CREATE TABLE calls (
		call_id      text COLLATE "C" NOT NULL PRIMARY KEY,
		caller_id    text COLLATE "C" NOT NULL DEFAULT '',
		namespace    text COLLATE "C" NOT NULL,
		function     text COLLATE "C" NOT NULL,
		version      bigint  NOT NULL,
		image        text COLLATE "C" NOT NULL,
		worker       text COLLATE "C" NOT NULL,
		instance     text COLLATE "C" NOT NULL,
		trigger_type text COLLATE "C" NOT NULL,
		start_ns     bigint  NOT NULL,
		end_ns       bigint  NOT NULL,
		duration_ns  bigint  NOT NULL,
		billed_ns    bigint  NOT NULL,
		memory_mib   bigint  NOT NULL,
		cold_start   boolean NOT NULL,
		init_ns      bigint  NOT NULL,
		status       integer NOT NULL,
		outcome      text COLLATE "C" NOT NULL,
		bytes_in     bigint  NOT NULL,
		bytes_out    bigint  NOT NULL
	);
	CREATE INDEX calls_caller ON calls (caller_id, start_ns) WHERE caller_id <> '';
	CREATE INDEX calls_start_id ON calls (start_ns, call_id);
	CREATE INDEX calls_namespace_start_id ON calls (namespace, start_ns, call_id);
	CREATE INDEX calls_namespace_function_start_id ON calls (namespace, function, start_ns, call_id);
	CREATE INDEX calls_function_start_id ON calls (function, start_ns, call_id);
	CREATE INDEX calls_outcome_start_id ON calls (outcome, start_ns, call_id) WHERE outcome <> 'ok';
	CREATE TABLE instances (
		instance   text COLLATE "C" NOT NULL PRIMARY KEY,
		namespace  text COLLATE "C" NOT NULL,
		function   text COLLATE "C" NOT NULL,
		worker     text COLLATE "C" NOT NULL,
		memory_mib bigint NOT NULL,
		ready_ns   bigint NOT NULL,
		stopped_ns bigint NOT NULL
	);
	CREATE INDEX instances_ready ON instances (ready_ns);
	CREATE INDEX instances_function_ready ON instances (namespace, function, ready_ns);
	CREATE TABLE call_hours (` + callRollupColumnsDDL + `);
	CREATE INDEX call_hours_function ON call_hours (namespace, function, start_ns);
	CREATE TABLE call_days (` + callRollupColumnsDDL + `);
	CREATE INDEX call_days_function ON call_days (namespace, function, start_ns);
	CREATE TABLE instance_hours (
		start_ns   bigint NOT NULL,
		namespace  text COLLATE "C" NOT NULL,
		function   text COLLATE "C" NOT NULL,
		memory_mib bigint NOT NULL,
		instances  bigint NOT NULL,
		held_ns    bigint NOT NULL,
		PRIMARY KEY (start_ns, namespace, function, memory_mib)
	);`,
	// 1 → 2: retention, as SQLite's schema version 5: raw_from_ns is the
	// hour from which call records are all kept (Prune deleted earlier
	// ones); one row, 0 before any pruning.
	`CREATE TABLE retention (
		id          integer NOT NULL PRIMARY KEY CHECK (id = 1),
		raw_from_ns bigint  NOT NULL
	);
	INSERT INTO retention (id, raw_from_ns) VALUES (1, 0);`,
	// 2 → 3: the paused tier, as SQLite's schema version 6: paused_ms is
	// the record's PausedMs, as sent; paused_ns in the rollup is Σ its
	// part of held_ns (billing.PausedNs). Records stored before had no
	// pauses: 0 in both is their truth, so nothing is backfilled (and
	// the constant default adds the columns without rewriting a table).
	`ALTER TABLE instances ADD COLUMN paused_ms bigint NOT NULL DEFAULT 0;
	ALTER TABLE instance_hours ADD COLUMN paused_ns bigint NOT NULL DEFAULT 0;`,
}

const callRollupColumnsDDL = `
	start_ns    bigint NOT NULL,
	namespace   text COLLATE "C" NOT NULL,
	function    text COLLATE "C" NOT NULL,
	outcome     text COLLATE "C" NOT NULL,
	memory_mib  bigint NOT NULL,
	requests    bigint NOT NULL,
	cold_starts bigint NOT NULL,
	duration_ns bigint NOT NULL,
	billed_ns   bigint NOT NULL,
	mib_micros  bigint NOT NULL,
	PRIMARY KEY (start_ns, namespace, function, outcome, memory_mib)`

// migrationLock is the key of the advisory lock that one migrating
// process holds, so that gateways started together on a new database do
// not create the tables twice. Any constant of our own; this one spells
// "gustbill".
const migrationLock = 0x6775737462696c6c

// connectTimeout bounds a connection attempt when the URL sets none.
const connectTimeout = 10 * time.Second

// writeAttempts bounds how often a write transaction is tried when the
// server aborts it for a deadlock or a serialization failure (possible
// when gateways add overlapping batches at once); the retry is safe as
// the write is idempotent.
const writeAttempts = 5

// Store is a gust.BillingStore on a PostgreSQL database. It is safe for
// concurrent use, also by several processes on the same database.
type Store struct {
	pool   *pgxpool.Pool
	logger *zap.Logger
	id     string
}

var _ gust.PruningStore = (*Store)(nil)

// Open connects to the database at url (postgres://… or a key=value
// connection string), brings its schema up to date and returns a ready
// store. A nil logger logs nothing.
func Open(ctx context.Context, url string, logger *zap.Logger) (*Store, error) {
	if logger == nil {
		logger = zap.NewNop()
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// The parse error may quote the URL, password included.
		return nil, errors.New("open billing store: invalid PostgreSQL URL")
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		// Without connect_timeout in the URL, a server that does not
		// answer (a dropped SYN) would hold Open, and every query after
		// it, for as long as the kernel retries.
		cfg.ConnConfig.ConnectTimeout = connectTimeout
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open billing store %s: %w", redacted(cfg), err)
	}
	s := &Store{pool: pool, logger: logger, id: databaseID(cfg)}
	version, err := s.migrate(ctx)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("open billing store %s: %w", redacted(cfg), err)
	}
	logger.Info("billing store open", zap.String("postgres", redacted(cfg)), zap.Int("schema_version", version))
	return s, nil
}

// ConsumerID names the database the store is in, the same for every
// process that opens it (by host, port, database and search_path; not
// by user or password): a name for what the processes sharing it share,
// such as the JetStream consumer that fills it. It is hex: a valid NATS
// name.
func (s *Store) ConsumerID() string { return s.id }

func databaseID(cfg *pgxpool.Config) string {
	c := cfg.ConnConfig
	h := sha256.Sum256([]byte(c.Host + "\x00" + strconv.Itoa(int(c.Port)) + "\x00" + c.Database + "\x00" +
		c.RuntimeParams["search_path"]))
	return "pg-" + hex.EncodeToString(h[:8])
}

// redacted names the database for logs and errors, without credentials.
func redacted(cfg *pgxpool.Config) string {
	c := cfg.ConnConfig
	return c.User + "@" + c.Host + ":" + strconv.Itoa(int(c.Port)) + "/" + c.Database
}

// migrate applies the migrations the database lacks, in one transaction
// under migrationLock, and returns the schema version.
func (s *Store) migrate(ctx context.Context) (int, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("begin migration: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrationLock)); err != nil {
		return 0, fmt.Errorf("lock schema: %w", err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS gust_billing_schema (version integer NOT NULL)`); err != nil {
		return 0, fmt.Errorf("create schema version table: %w", err)
	}
	var version int
	err = tx.QueryRow(ctx, `SELECT version FROM gust_billing_schema`).Scan(&version)
	if errors.Is(err, pgx.ErrNoRows) {
		_, err = tx.Exec(ctx, `INSERT INTO gust_billing_schema (version) VALUES (0)`)
	}
	if err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	if version > len(migrations) {
		return 0, fmt.Errorf("schema version %d is newer than this program knows (%d)", version, len(migrations))
	}
	if version == len(migrations) {
		return version, nil
	}
	for i := version; i < len(migrations); i++ {
		if _, err := tx.Exec(ctx, migrations[i]); err != nil {
			return 0, fmt.Errorf("migrate schema to version %d: %w", i+1, err)
		}
	}
	if _, err := tx.Exec(ctx, `UPDATE gust_billing_schema SET version = $1`, len(migrations)); err != nil {
		return 0, fmt.Errorf("set schema version: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("commit migration: %w", err)
	}
	return len(migrations), nil
}

// Close closes the connections.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// write runs fn in one transaction and commits what it did, trying again
// when the server aborted it for a deadlock or serialization failure.
func (s *Store) write(ctx context.Context, fn func(tx pgx.Tx) (int, error)) (int, error) {
	var err error
	for range writeAttempts {
		var n int
		n, err = s.writeOnce(ctx, fn)
		var pgErr *pgconn.PgError
		if err == nil || !errors.As(err, &pgErr) || (pgErr.Code != "40P01" && pgErr.Code != "40001") {
			return n, err
		}
		s.logger.Debug("billing store transaction retried", zap.String("sqlstate", pgErr.Code), zap.Error(err))
	}
	return 0, err
}

func (s *Store) writeOnce(ctx context.Context, fn func(tx pgx.Tx) (int, error)) (int, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	n, err := fn(tx)
	if err != nil {
		return 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	return n, nil
}

// AddCalls implements gust.BillingStore: the batch commits in one
// transaction with the rollups of the records it really inserted;
// records whose call id is already stored (or came earlier in the batch)
// are skipped, and so change no rollup.
func (s *Store) AddCalls(ctx context.Context, recs []gust.CallRecord) error {
	if len(recs) == 0 {
		return nil
	}
	// The first record of each id, in id order: the first is the one the
	// store keeps (as SQLite's INSERT OR IGNORE does), and transactions
	// that take the rows' locks in one order cannot deadlock on them.
	batch := firstOfEach(recs, func(r *gust.CallRecord) string { return r.CallID })
	skipped := 0
	added, err := s.write(ctx, func(tx pgx.Tx) (int, error) {
		// A record from before the retention horizon arrives after its
		// hour was pruned: whether it was counted then cannot be known
		// (its id is gone), so it is left out rather than perhaps counted
		// twice, as SQLite's store does. FOR SHARE holds Prune's move of
		// the horizon until this transaction ends, so that no record
		// below a horizon is inserted after its older copy was deleted;
		// ingest transactions do not wait for each other on it.
		var rawFrom int64
		if err := tx.QueryRow(ctx, `SELECT raw_from_ns FROM retention FOR SHARE`).Scan(&rawFrom); err != nil {
			return 0, fmt.Errorf("retention horizon: %w", err)
		}
		kept := batch
		if rawFrom != 0 {
			kept = make([]gust.CallRecord, 0, len(batch))
			for i := range batch {
				if unixNano(batch[i].Start) >= rawFrom {
					kept = append(kept, batch[i])
				}
			}
		}
		skipped = len(batch) - len(kept)
		if len(kept) == 0 {
			return 0, nil
		}
		batch := kept
		ids, err := insertCalls(ctx, tx, batch)
		if err != nil || len(ids) == 0 {
			return 0, err
		}
		inserted := make([]gust.CallRecord, 0, len(ids))
		for i := range batch {
			if _, ok := ids[batch[i].CallID]; ok {
				inserted = append(inserted, batch[i])
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
	})
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

// firstOfEach returns the first record of each id in recs, sorted by id.
func firstOfEach[R any](recs []R, id func(*R) string) []R {
	out := make([]R, 0, len(recs))
	seen := make(map[string]struct{}, len(recs))
	for i := range recs {
		k := id(&recs[i])
		if _, ok := seen[k]; !ok {
			seen[k] = struct{}{}
			out = append(out, recs[i])
		}
	}
	slices.SortStableFunc(out, func(a, b R) int { return strings.Compare(id(&a), id(&b)) })
	return out
}

// insertCalls inserts recs (distinct ids) in one statement, the columns
// as arrays (one round trip and no bound on parameters whatever the
// batch), and returns the ids it really inserted.
func insertCalls(ctx context.Context, tx pgx.Tx, recs []gust.CallRecord) (map[string]struct{}, error) {
	n := len(recs)
	var (
		callID, callerID, ns, fn, image, worker, instance, trigger, outcome = make([]string, n), make([]string, n),
			make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n),
			make([]string, n), make([]string, n)
		version, start, end, dur, billed, mem, initNs, in, out = make([]int64, n), make([]int64, n), make([]int64, n),
			make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
		cold   = make([]bool, n)
		status = make([]int32, n)
	)
	for i := range recs {
		r := &recs[i]
		callID[i], callerID[i], ns[i], fn[i] = text(r.CallID), text(r.CallerID), text(r.Namespace), text(r.Function)
		image[i], worker[i], instance[i], trigger[i], outcome[i] = text(r.Image), text(r.Worker), text(r.Instance),
			text(r.Trigger), text(r.Outcome)
		version[i], start[i], end[i], dur[i], billed[i] = int64(r.Version), unixNano(r.Start), unixNano(r.End),
			r.DurationNs, r.BilledNs
		mem[i], initNs[i], in[i], out[i], cold[i], status[i] = r.MemoryMiB, r.InitNs, r.BytesIn, r.BytesOut,
			r.ColdStart, int32(r.Status)
	}
	rows, err := tx.Query(ctx, `INSERT INTO calls (`+callColumns+`)
		SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[],
			$8::text[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], $13::bigint[], $14::boolean[],
			$15::bigint[], $16::integer[], $17::text[], $18::bigint[], $19::bigint[], $20::text[])
		ON CONFLICT (call_id) DO NOTHING RETURNING call_id`,
		callID, ns, fn, version, image, worker, instance, trigger, start, end, dur, billed, mem, cold, initNs,
		status, outcome, in, out, callerID)
	if err != nil {
		return nil, fmt.Errorf("insert: %w", err)
	}
	ids := make(map[string]struct{}, n)
	var id string
	_, err = pgx.ForEachRow(rows, []any{&id}, func() error {
		ids[id] = struct{}{}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("insert: %w", err)
	}
	return ids, nil
}

// text makes s storable in a PostgreSQL text column, which takes neither
// NUL bytes nor invalid UTF-8 (SQLite takes both). Records arrive through
// JSON and HTTP headers, so neither should occur; if one does, its record
// is stored with the bytes replaced rather than its whole batch refused
// on every redelivery.
func text(s string) string {
	if strings.IndexByte(s, 0) < 0 && utf8.ValidString(s) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// upsertCallRollups adds rows to the call rollup table, in key order (so
// that concurrent writers lock rollup rows in one order).
func upsertCallRollups(ctx context.Context, tx pgx.Tx, table string, rows map[billing.CallRollupKey]*billing.CallRollup) error {
	keys := make([]billing.CallRollupKey, 0, len(rows))
	for k := range rows {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b billing.CallRollupKey) int {
		return cmp.Or(cmp.Compare(a.StartNs, b.StartNs), strings.Compare(a.Namespace, b.Namespace),
			strings.Compare(a.Function, b.Function), strings.Compare(a.Outcome, b.Outcome),
			cmp.Compare(a.MemoryMiB, b.MemoryMiB))
	})
	n := len(keys)
	start, mem, req, cold, dur, billed, mib := make([]int64, n), make([]int64, n), make([]int64, n),
		make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
	ns, fn, outcome := make([]string, n), make([]string, n), make([]string, n)
	for i, k := range keys {
		r := rows[k]
		start[i], ns[i], fn[i], outcome[i], mem[i] = k.StartNs, text(k.Namespace), text(k.Function), text(k.Outcome), k.MemoryMiB
		req[i], cold[i], dur[i], billed[i], mib[i] = r.Requests, r.ColdStarts, r.DurationNs, r.BilledNs, r.MiBMicros
	}
	// table is one of our two constants, never input.
	_, err := tx.Exec(ctx, `INSERT INTO `+table+` AS t (start_ns, namespace, function, outcome, memory_mib,
			requests, cold_starts, duration_ns, billed_ns, mib_micros)
		SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[],
			$7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[])
		ON CONFLICT (start_ns, namespace, function, outcome, memory_mib) DO UPDATE SET
			requests = t.requests + excluded.requests, cold_starts = t.cold_starts + excluded.cold_starts,
			duration_ns = t.duration_ns + excluded.duration_ns, billed_ns = t.billed_ns + excluded.billed_ns,
			mib_micros = t.mib_micros + excluded.mib_micros`,
		start, ns, fn, outcome, mem, req, cold, dur, billed, mib)
	if err != nil {
		return fmt.Errorf("%s: %w", table, err)
	}
	return nil
}

// AddInstances implements gust.BillingStore: the batch commits in one
// transaction with the rollups of the records it really inserted;
// records whose instance id is already stored are skipped.
func (s *Store) AddInstances(ctx context.Context, recs []gust.InstanceRecord) error {
	if len(recs) == 0 {
		return nil
	}
	batch := firstOfEach(recs, func(r *gust.InstanceRecord) string { return r.Instance })
	added, err := s.write(ctx, func(tx pgx.Tx) (int, error) {
		n := len(batch)
		id, ns, fn, worker := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		mem, ready, stopped, paused := make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
		for i := range batch {
			r := &batch[i]
			id[i], ns[i], fn[i], worker[i] = text(r.Instance), text(r.Namespace), text(r.Function), text(r.Worker)
			mem[i], ready[i], stopped[i], paused[i] = r.MemoryMiB, unixNano(r.Ready), unixNano(r.Stopped), r.PausedMs
		}
		rows, err := tx.Query(ctx, `INSERT INTO instances (instance, namespace, function, worker, memory_mib, ready_ns,
				stopped_ns, paused_ms)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[],
				$8::bigint[])
			ON CONFLICT (instance) DO NOTHING RETURNING instance`, id, ns, fn, worker, mem, ready, stopped, paused)
		if err != nil {
			return 0, fmt.Errorf("insert: %w", err)
		}
		ids := make(map[string]struct{}, n)
		var got string
		if _, err := pgx.ForEachRow(rows, []any{&got}, func() error {
			ids[got] = struct{}{}
			return nil
		}); err != nil {
			return 0, fmt.Errorf("insert: %w", err)
		}
		if len(ids) == 0 {
			return 0, nil
		}
		inserted := make([]gust.InstanceRecord, 0, len(ids))
		for i := range batch {
			if _, ok := ids[batch[i].Instance]; ok {
				inserted = append(inserted, batch[i])
			}
		}
		return len(inserted), upsertInstanceRollups(ctx, tx, billing.RollInstances(inserted))
	})
	if err != nil {
		return fmt.Errorf("add instances: %w", err)
	}
	if ce := s.logger.Check(zapcore.DebugLevel, "instances committed"); ce != nil {
		ce.Write(zap.Int("records", len(recs)), zap.Int("added", added))
	}
	return nil
}

// upsertInstanceRollups adds rows to instance_hours, in key order.
func upsertInstanceRollups(ctx context.Context, tx pgx.Tx, rows map[billing.InstanceRollupKey]*billing.InstanceRollup) error {
	keys := make([]billing.InstanceRollupKey, 0, len(rows))
	for k := range rows {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b billing.InstanceRollupKey) int {
		return cmp.Or(cmp.Compare(a.StartNs, b.StartNs), strings.Compare(a.Namespace, b.Namespace),
			strings.Compare(a.Function, b.Function), cmp.Compare(a.MemoryMiB, b.MemoryMiB))
	})
	n := len(keys)
	start, mem, count, held, paused := make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n),
		make([]int64, n)
	ns, fn := make([]string, n), make([]string, n)
	for i, k := range keys {
		r := rows[k]
		start[i], ns[i], fn[i], mem[i], count[i], held[i], paused[i] = k.StartNs, text(k.Namespace), text(k.Function),
			k.MemoryMiB, r.Instances, r.HeldNs, r.PausedNs
	}
	_, err := tx.Exec(ctx, `INSERT INTO instance_hours AS t (start_ns, namespace, function, memory_mib, instances, held_ns,
			paused_ns)
		SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[])
		ON CONFLICT (start_ns, namespace, function, memory_mib) DO UPDATE SET
			instances = t.instances + excluded.instances, held_ns = t.held_ns + excluded.held_ns,
			paused_ns = t.paused_ns + excluded.paused_ns`,
		start, ns, fn, mem, count, held, paused)
	if err != nil {
		return fmt.Errorf("instance_hours: %w", err)
	}
	return nil
}

const callColumns = `call_id, namespace, function, version, image, worker, instance, trigger_type,
	start_ns, end_ns, duration_ns, billed_ns, memory_mib, cold_start, init_ns, status, outcome,
	bytes_in, bytes_out, caller_id`

func scanCall(row pgx.Row) (gust.CallRecord, error) {
	var (
		r              gust.CallRecord
		version        int64
		startNs, endNs int64
		status         int32
	)
	err := row.Scan(&r.CallID, &r.Namespace, &r.Function, &version, &r.Image, &r.Worker, &r.Instance, &r.Trigger,
		&startNs, &endNs, &r.DurationNs, &r.BilledNs, &r.MemoryMiB, &r.ColdStart, &r.InitNs, &status, &r.Outcome,
		&r.BytesIn, &r.BytesOut, &r.CallerID)
	if err != nil {
		return gust.CallRecord{}, err
	}
	r.Version, r.Status = uint64(version), int(status)
	r.Start, r.End = fromUnixNano(startNs), fromUnixNano(endNs)
	return r, nil
}

// Call implements gust.BillingStore. An id that is no call id is looked
// up as a caller's X-Call-Id: the latest call that sent it.
func (s *Store) Call(ctx context.Context, callID string) (gust.CallRecord, error) {
	r, err := scanCall(s.pool.QueryRow(ctx, `SELECT `+callColumns+` FROM calls WHERE call_id = $1`, text(callID)))
	if errors.Is(err, pgx.ErrNoRows) {
		r, err = scanCall(s.pool.QueryRow(ctx, `SELECT `+callColumns+` FROM calls
			WHERE caller_id = $1 AND caller_id <> '' ORDER BY start_ns DESC, call_id DESC LIMIT 1`, text(callID)))
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return gust.CallRecord{}, fmt.Errorf("call %s: %w", callID, gust.ErrNotFound)
	}
	if err != nil {
		return gust.CallRecord{}, fmt.Errorf("get call %s: %w", callID, err)
	}
	return r, nil
}

// Calls implements gust.BillingStore. Records come newest first (start
// time, then call id in byte order, both descending). The cursor is
// billing.EncodeCursor's; one that does not decode is an EINVALID error
// on field "cursor".
func (s *Store) Calls(ctx context.Context, f gust.CallFilter) ([]gust.CallRecord, string, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = billing.DefaultLimit
	}
	query, args, err := callsQuery(f, limit)
	if err != nil {
		return nil, "", err
	}
	rows, err := s.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, "", fmt.Errorf("list calls: %w", err)
	}
	defer rows.Close()
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
	rows.Close()
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
		// Of the two upper bounds only the lower one goes into the query
		// (either implies the other), so that the index scan starts at it.
		if f.To.IsZero() || startNs < unixNano(f.To) {
			f.To, cursor = time.Time{}, true
		}
	}
	var q query
	q.filter(f, `start_ns`, true)
	if f.Outcome != "" && f.Outcome != gust.OutcomeOK {
		// Implied by outcome = $n, but the planner uses the partial
		// outcome index only when the query states its predicate.
		q.where = append(q.where, `outcome <> 'ok'`)
	}
	if cursor {
		// A row value: a B-tree index on (..., start_ns, call_id) is
		// scanned from it, where start_ns < a OR (start_ns = a AND
		// call_id < b) is not an index condition.
		q.cond(`(start_ns, call_id) < (?, ?)`, startNs, text(callID))
	}
	q.args = append(q.args, limit+1)
	return q.sql(`SELECT ` + callColumns + ` FROM calls` + q.whereClause() +
		` ORDER BY start_ns DESC, call_id DESC LIMIT ?`), q.args, nil
}

// groupExprs are the SQL expressions of the Usage group keys, on the
// records and on the rollups alike (both have start_ns): the same strings
// as SQLite's strftime makes (its start_ns / 1000000000 truncates toward
// zero, as bigint division here does). Time buckets are UTC.
var groupExprs = map[string]string{
	gust.GroupByNamespace: `namespace`,
	gust.GroupByFunction:  `namespace || '/' || function`,
	gust.GroupByHour:      `to_char(to_timestamp(start_ns / 1000000000) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:00"Z"')`,
	gust.GroupByDay:       `to_char(to_timestamp(start_ns / 1000000000) AT TIME ZONE 'UTC', 'YYYY-MM-DD')`,
	gust.GroupByMonth:     `to_char(to_timestamp(start_ns / 1000000000) AT TIME ZONE 'UTC', 'YYYY-MM')`,
}

// Usage implements gust.BillingStore, as internal/sqlite's: calls are
// selected by f on their start time and grouped by (group, namespace),
// sorted by group then namespace in byte order; instances are selected by
// namespace, function and ready time (f.Outcome does not apply) and
// grouped by (namespace, function, memory). Whole days and hours of the
// range are read from the rollups, the partial hours at its edges from
// the records (billing.Spans). An unknown groupBy is an EINVALID error on
// field "group_by".
func (s *Store) Usage(ctx context.Context, f gust.CallFilter, groupBy string) ([]gust.UsageRow, []gust.InstanceUsageRow, error) {
	expr, ok := groupExprs[groupBy]
	if !ok {
		return nil, nil, gust.Invalidf("group_by", "unknown grouping %q: want namespace, function, hour, day or month", groupBy)
	}
	var rawFrom int64
	if err := s.pool.QueryRow(ctx, `SELECT raw_from_ns FROM retention`).Scan(&rawFrom); err != nil {
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
// few enough that the locks and the write-ahead log of one stay small
// while ingest goes on.
const pruneBatch = 2000

// Prune implements gust.PruningStore, as SQLite's store: it first moves
// the horizon (so that reports read rollups below it from then on), then
// deletes the older call records pruneBatch at a time, each batch its
// own transaction. The rollups and the instance records stay.
func (s *Store) Prune(ctx context.Context, before time.Time) (int64, error) {
	h := billing.Bucket(unixNano(before), billing.HourNs)
	if _, err := s.pool.Exec(ctx, `UPDATE retention SET raw_from_ns = GREATEST(raw_from_ns, $1)`, h); err != nil {
		return 0, fmt.Errorf("prune: %w", err)
	}
	var deleted int64
	for {
		if err := ctx.Err(); err != nil {
			return deleted, fmt.Errorf("prune: %w", err)
		}
		// The start index finds the oldest rows, the key deletes them.
		tag, err := s.pool.Exec(ctx, `DELETE FROM calls WHERE call_id IN
			(SELECT call_id FROM calls WHERE start_ns < $1 ORDER BY start_ns LIMIT $2)`, h, pruneBatch)
		if err != nil {
			return deleted, fmt.Errorf("prune: %w", err)
		}
		n := tag.RowsAffected()
		deleted += n
		if n < pruneBatch {
			return deleted, nil
		}
	}
}

// RawFrom implements gust.PruningStore.
func (s *Store) RawFrom(ctx context.Context) (time.Time, error) {
	var ns int64
	if err := s.pool.QueryRow(ctx, `SELECT raw_from_ns FROM retention`).Scan(&ns); err != nil {
		return time.Time{}, fmt.Errorf("retention horizon: %w", err)
	}
	return fromUnixNano(ns), nil
}

// callSums are the sums of callUsage, on the records and on the rollups.
// billed_ns / 1000 is exact: billed durations are whole microseconds.
// Bigint arithmetic fails on overflow rather than wrapping, and the
// numeric SUM is cast back to bigint, which fails likewise.
var callSums = map[billing.Source]struct{ table, sums string }{
	billing.Raw: {`calls`, `COUNT(*) AS r, COUNT(*) FILTER (WHERE outcome <> 'ok') AS e,
		COUNT(*) FILTER (WHERE cold_start) AS c, SUM(duration_ns) AS d, SUM(billed_ns) AS b,
		SUM(memory_mib * (billed_ns / 1000)) AS m`},
	billing.Hours: {`call_hours`, callRollupSums},
	billing.Days:  {`call_days`, callRollupSums},
}

const callRollupSums = `SUM(requests) AS r, SUM(requests) FILTER (WHERE outcome <> 'ok') AS e,
	SUM(cold_starts) AS c, SUM(duration_ns) AS d, SUM(billed_ns) AS b, SUM(mib_micros) AS m`

// callUsage sums the calls of f's filters other than its range over
// spans.
func (s *Store) callUsage(ctx context.Context, f gust.CallFilter, groupExpr string, spans []billing.Span) ([]gust.UsageRow, error) {
	var (
		q     query
		parts []string
	)
	for _, sp := range spans {
		src := callSums[sp.Source]
		where := q.span(f, sp, `start_ns`, true)
		parts = append(parts, `SELECT `+groupExpr+` AS grp, namespace, `+src.sums+` FROM `+src.table+
			where+` GROUP BY grp, namespace`)
	}
	out := []gust.UsageRow{}
	if len(parts) == 0 {
		return out, nil
	}
	rows, err := s.pool.Query(ctx, q.sql(`SELECT grp, namespace, SUM(r)::bigint, COALESCE(SUM(e), 0)::bigint,
		COALESCE(SUM(c), 0)::bigint, SUM(d)::bigint, SUM(b)::bigint, SUM(m)::bigint
		FROM (`+strings.Join(parts, ` UNION ALL `)+`) AS parts
		GROUP BY grp, namespace
		ORDER BY grp COLLATE "C", namespace COLLATE "C"`), q.args...)
	if err != nil {
		return nil, fmt.Errorf("usage: %w", err)
	}
	var u gust.UsageRow
	_, err = pgx.ForEachRow(rows, []any{&u.Group, &u.Namespace, &u.Requests, &u.Errors, &u.ColdStarts,
		&u.DurationNs, &u.BilledNs, &u.MiBMicros}, func() error {
		out = append(out, u)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("usage: %w", err)
	}
	return out, nil
}

// heldExpr and pausedExpr are billing.HeldNs and billing.PausedNs of an
// instance record, in SQL, as SQLite's store has them: a record whose
// stop precedes its ready time (clock step) holds nothing rather than a
// negative amount, and its paused part is at least none and at most its
// held time, compared in milliseconds before the multiplication (which
// would fail with bigint overflow past it: CASE evaluates only the branch
// it takes).
const (
	heldExpr   = `GREATEST(stopped_ns - ready_ns, 0)`
	pausedExpr = `CASE WHEN paused_ms <= 0 THEN 0 WHEN paused_ms > ` + heldExpr + ` / 1000000 THEN ` + heldExpr +
		` ELSE paused_ms * 1000000 END`
)

func (s *Store) instanceUsage(ctx context.Context, f gust.CallFilter) ([]gust.InstanceUsageRow, error) {
	var (
		q     query
		parts []string
	)
	for _, sp := range billing.Spans(f.From, f.To, false) {
		if sp.Source == billing.Raw {
			where := q.span(f, sp, `ready_ns`, false)
			parts = append(parts, `SELECT namespace, function, memory_mib, COUNT(*) AS n,
				SUM(`+heldExpr+`) AS held, SUM(`+pausedExpr+`) AS paused FROM instances`+where+
				` GROUP BY namespace, function, memory_mib`)
		} else {
			where := q.span(f, sp, `start_ns`, false)
			parts = append(parts, `SELECT namespace, function, memory_mib, SUM(instances) AS n, SUM(held_ns) AS held,
				SUM(paused_ns) AS paused FROM instance_hours`+where+` GROUP BY namespace, function, memory_mib`)
		}
	}
	out := []gust.InstanceUsageRow{}
	if len(parts) == 0 {
		return out, nil
	}
	rows, err := s.pool.Query(ctx, q.sql(`SELECT namespace, function, memory_mib, SUM(n)::bigint, SUM(held)::bigint,
			SUM(paused)::bigint
		FROM (`+strings.Join(parts, ` UNION ALL `)+`) AS parts
		GROUP BY namespace, function, memory_mib
		ORDER BY namespace COLLATE "C", function COLLATE "C", memory_mib`), q.args...)
	if err != nil {
		return nil, fmt.Errorf("instance usage: %w", err)
	}
	var u gust.InstanceUsageRow
	_, err = pgx.ForEachRow(rows, []any{&u.Namespace, &u.Function, &u.MemoryMiB, &u.Instances, &u.HeldNs, &u.PausedNs}, func() error {
		out = append(out, u)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("instance usage: %w", err)
	}
	return out, nil
}

// query gathers the conditions and arguments of a statement written with
// '?' placeholders, which sql numbers as PostgreSQL's $1, $2, … (no
// statement here has a '?' of its own).
type query struct {
	where []string
	args  []any
}

func (q *query) cond(c string, args ...any) {
	q.where, q.args = append(q.where, c), append(q.args, args...)
}

// filter adds f's namespace, function and [From, To) filters, the time
// range on timeCol, and its outcome filter if withOutcome.
func (q *query) filter(f gust.CallFilter, timeCol string, withOutcome bool) {
	if f.Namespace != "" {
		q.cond(`namespace = ?`, text(f.Namespace))
	}
	if f.Function != "" {
		q.cond(`function = ?`, text(f.Function))
	}
	if !f.From.IsZero() {
		q.cond(timeCol+` >= ?`, unixNano(f.From))
	}
	if !f.To.IsZero() {
		q.cond(timeCol+` < ?`, unixNano(f.To))
	}
	if withOutcome && f.Outcome != "" {
		q.cond(`outcome = ?`, text(f.Outcome))
	}
}

// span adds the conditions of f's filters with the time range of sp (on
// timeCol) in place of f's own, and returns their WHERE clause; the
// conditions are then cleared for the next part, the arguments kept.
func (q *query) span(f gust.CallFilter, sp billing.Span, timeCol string, withOutcome bool) string {
	f.From, f.To = time.Time{}, time.Time{}
	q.filter(f, timeCol, withOutcome)
	if sp.From != billing.OpenFrom {
		q.cond(timeCol+` >= ?`, sp.From)
	}
	if sp.To != billing.OpenTo {
		q.cond(timeCol+` < ?`, sp.To)
	}
	w := q.whereClause()
	q.where = q.where[:0]
	return w
}

func (q *query) whereClause() string {
	if len(q.where) == 0 {
		return ""
	}
	return ` WHERE ` + strings.Join(q.where, ` AND `)
}

// sql numbers the '?' placeholders of s.
func (q *query) sql(s string) string {
	var b strings.Builder
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
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
