package main

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gustfaas/gust"
	"go.uber.org/zap"
)

// pruneEvery is how often a process that keeps a billing store deletes
// the call records past the retention age (a variable for tests).
var pruneEvery = 15 * time.Minute

// retentionFlag registers --billing-retention and returns where its value
// lands.
func retentionFlag(fs *flag.FlagSet) *retention {
	r := new(retention)
	if v := envOr("GUST_BILLING_RETENTION", ""); v != "" {
		_ = r.Set(v) // a bad value is reported by the flag when given, else ignored here
	}
	fs.Var(r, "billing-retention", "delete raw call records older than this from the billing store (e.g. 2160h or 90d); reports over older ranges answer from hourly rollups (default: keep every record) ($GUST_BILLING_RETENTION)")
	return r
}

// retention is a flag.Value: a duration that also takes whole days (90d).
type retention time.Duration

func (r *retention) String() string {
	if r == nil || *r == 0 {
		return ""
	}
	return time.Duration(*r).String()
}

func (r *retention) Set(v string) error {
	d, err := parseRetention(v)
	if err != nil {
		return err
	}
	*r = retention(d)
	return nil
}

// parseRetention reads a Go duration or a whole number of days ("90d");
// "0" keeps every record.
func parseRetention(v string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(v, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("%q: want a number of days such as 90d, or a duration such as 2160h", v)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q: want a number of days such as 90d, or a duration such as 2160h", v)
	}
	if d > 0 && d < time.Hour {
		return 0, fmt.Errorf("%q: keep call records at least an hour (rollups are hourly)", v)
	}
	return d, nil
}

// prune deletes the call records of store older than keep now and every
// pruneEvery until ctx ends. A store that cannot prune keeps everything.
func prune(ctx context.Context, store gust.BillingStore, keep time.Duration, logger *zap.Logger) {
	ps, ok := store.(gust.PruningStore)
	if !ok || keep <= 0 {
		return
	}
	tick := time.NewTicker(pruneEvery)
	defer tick.Stop()
	for {
		before := time.Now().Add(-keep)
		began := time.Now()
		n, err := ps.Prune(ctx, before)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			logger.Warn("billing store: pruning old call records failed; retrying later", zap.Error(err))
		case n > 0:
			logger.Info("billing store: old call records deleted (their rollups stay)",
				zap.Int64("records", n), zap.Time("before", before.Truncate(time.Hour)), zap.Duration("took", time.Since(began)))
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
