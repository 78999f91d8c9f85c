package main

import (
	"context"
	"errors"
	"path/filepath"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/metrics"
	"github.com/gustfaas/gust/internal/natsbus"
	"github.com/gustfaas/gust/internal/spool"
	"go.uber.org/zap"
)

// Metering is the metering side of a process: the spool and publisher of
// the records its worker (or gateway) makes, and, where a billing store is
// kept, the store and the ingest that fills it from JetStream.
type Metering struct {
	Metrics *metrics.Metrics
	Meter   *natsbus.Meter
	Store   billingStore
	ingest  *natsbus.Ingest
	bus     *natsbus.Bus
	logger  *zap.Logger
	// stopPrune ends the retention loop; pruned is closed when it has.
	stopPrune context.CancelFunc
	pruned    chan struct{}
}

// meterConfig says what a process meters and stores.
type meterConfig struct {
	DataDir   string
	Store     bool   // keep a billing store fed from the stream
	StoreURL  string // --billing-store: empty for SQLite in DataDir
	SpoolMax  int64
	Retention time.Duration
	// SyncWait > 0: a call's record is in JetStream before its answer
	// ends, waiting at most this long (natsbus.Meter.SetSync).
	SyncWait time.Duration
	// KeepRaw > 0 deletes raw call records older than this from the
	// store (--billing-retention); rollups stay.
	KeepRaw time.Duration
}

// startMetering opens the spool (and the store) under the data directory
// and starts publishing (and ingesting).
func startMetering(ctx context.Context, bus *natsbus.Bus, cfg meterConfig, m *metrics.Metrics, logger *zap.Logger) (*Metering, error) {
	mt := &Metering{Metrics: m, bus: bus, logger: logger}
	if err := privateDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	if err := natsbus.EnsureMeterStream(ctx, bus, cfg.Retention); err != nil {
		return nil, err
	}
	sp, err := spool.Open(filepath.Join(cfg.DataDir, "spool"), cfg.SpoolMax)
	if err != nil {
		return nil, err
	}
	mt.Meter = natsbus.NewMeter(bus, sp, m, logger)
	if cfg.SyncWait > 0 {
		mt.Meter.SetSync(cfg.SyncWait)
	}
	mt.Meter.Start()
	if cfg.Store {
		if mt.Store, err = openBillingStore(ctx, cfg.DataDir, cfg.StoreURL, logger.Named("billing")); err != nil {
			mt.Close()
			return nil, err
		}
		durable, err := ingestConsumer(mt.Store, cfg.DataDir)
		if err != nil {
			mt.Close()
			return nil, err
		}
		mt.ingest = natsbus.NewIngest(bus, mt.Store, durable, m, logger)
		if err := mt.ingest.Start(ctx); err != nil {
			mt.Close()
			return nil, err
		}
		if cfg.KeepRaw > 0 {
			var pctx context.Context
			pctx, mt.stopPrune = context.WithCancel(context.Background())
			mt.pruned = make(chan struct{})
			go func() {
				defer close(mt.pruned)
				prune(pctx, mt.Store, cfg.KeepRaw, logger.Named("billing"))
			}()
		}
	}
	return mt, nil
}

// Close publishes what is spooled (for a few seconds at most; the rest
// waits in the spool for the next run), lets the store take in what was
// published, and closes.
func (mt *Metering) Close() error {
	if mt == nil {
		return nil
	}
	var errs []error
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if mt.Meter != nil {
		errs = append(errs, mt.Meter.Close(ctx))
	}
	if mt.stopPrune != nil {
		mt.stopPrune()
		<-mt.pruned
	}
	if mt.ingest != nil {
		mt.ingest.Drain(ctx)
		mt.ingest.Close()
	}
	if mt.Store != nil {
		errs = append(errs, mt.Store.Close())
	}
	return errors.Join(errs...)
}

// meter is what to meter calls with: none (a nil interface, not a nil
// *natsbus.Meter in one) when mt is nil.
func (mt *Metering) meter() gust.Meter {
	if mt == nil {
		return nil
	}
	return mt.Meter
}
