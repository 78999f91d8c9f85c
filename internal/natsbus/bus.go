package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/tasks"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// Bus is one connection to NATS with its JetStream context. It owns the
// goroutines it starts (requests being served, table watches, queue
// consumers): Close stops them and waits for them before the connection
// closes.
type Bus struct {
	NC     *nats.Conn
	JS     jetstream.JetStream
	logger *zap.Logger

	// tasks owns the bus's goroutines; its context ends when Close
	// begins, and the long-lived ones stop on it.
	tasks *tasks.Group
	// provision, replicas: see ClientConfig.Provision and Replicas.
	provision bool
	replicas  int
	// bindOnly: the connection is a role's (gateway, scheduler, worker),
	// whose permissions do not let it create streams: a missing one is
	// reported at once rather than after a create nobody answers.
	bindOnly bool
	// fabric: the streams of the watched tables (fabric.go).
	fabric fabric
}

// errClosed is returned by what the bus refuses to start once it closes.
var errClosed = errors.New("nats bus closed")

// ClientConfig says how a role reaches NATS.
type ClientConfig struct {
	// URL is nats://host:port (tls:// for TLS), possibly with user and
	// password (nats://gateway:PASSWORD@host:port); a comma-separated
	// list names several servers of a cluster.
	URL string
	// Name identifies the connection in the server's views.
	Name string
	// User and Password are the credentials, unless the URL has them.
	User, Password string
	// CredsFile is a NATS credentials file (a user JWT and NKey seed),
	// for servers that use decentralized authentication.
	CredsFile string
	// CAFile is the PEM file of the CA that signed the server's TLS
	// certificate; given, the connection requires TLS.
	CAFile string
	// CertFile and KeyFile are a client certificate, for servers that
	// require mutual TLS.
	CertFile, KeyFile string
	// InProcess connects to the server of this process without a socket
	// (and without TLS); URL is then ignored.
	InProcess *Server
	// Provision makes this connection create or update Gust's streams and
	// buckets to their current configuration when it opens them (the
	// server's own connection: `gust up`, `gust nats`); the roles only
	// bind to them, and need no right to change them.
	Provision bool
	// Replicas is how many servers keep each stream and bucket the
	// provisioning connection creates or updates (JetStream replicas): 3
	// in a cluster of three servers or more, so that losing one loses
	// nothing; 0 or 1 on a single server.
	Replicas int
}

// Connect dials NATS at url (credentials in it, if any) and keeps
// reconnecting for ever after a loss.
func Connect(url, name string, logger *zap.Logger) (*Bus, error) {
	return ConnectWith(ClientConfig{URL: url, Name: name}, logger)
}

// ConnectWith dials NATS as cfg says and keeps reconnecting for ever
// after a loss. A Gust role's replies come on its own inbox prefix
// (InboxPrefix.user).
func ConnectWith(cfg ClientConfig, logger *zap.Logger) (*Bus, error) {
	logger = logger.Named("natsbus")
	// The connection's handlers tell the bus's watches that the link
	// changed (fabric.go); the bus is filled in once connected.
	b := &Bus{}
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		// A server that dies with its host (or is killed in a container)
		// sends no FIN: only unanswered pings tell. nats.go's default, two
		// minutes, would leave a role on a dead server that long; this
		// moves it within about six seconds.
		nats.PingInterval(2 * time.Second),
		nats.MaxPingsOutstanding(3),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				logger.Warn("nats disconnected", zap.Error(err))
			}
			b.fabricChange()
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			logger.Info("nats reconnected", zap.String("url", redactURL(nc.ConnectedUrl())))
			b.fabricChange()
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			// Permission violations land here: they name the subject a
			// role was refused, which is what an operator needs.
			logger.Warn("nats error", zap.Error(err))
		}),
	}
	user := URLUser(cfg.URL)
	if user == "" && cfg.User != "" {
		user = cfg.User
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	}
	if p := inboxPrefix(user); p != "" {
		opts = append(opts, nats.CustomInboxPrefix(p))
	}
	if cfg.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.CAFile != "" {
		opts = append(opts, nats.RootCAs(cfg.CAFile))
	}
	if cfg.CertFile != "" || cfg.KeyFile != "" {
		opts = append(opts, nats.ClientCert(cfg.CertFile, cfg.KeyFile))
	}
	if cfg.InProcess != nil {
		opts = append(opts, nats.InProcessServer(cfg.InProcess.ns))
	}
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats at %s: %w", redactURL(cfg.URL), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	// The bus's goroutines live as long as the connection, not as long
	// as anything of the caller's: Close ends them.
	b.NC, b.JS, b.logger, b.tasks, b.provision, b.replicas = nc, js, logger, tasks.New(context.Background()), cfg.Provision, cfg.Replicas
	b.bindOnly = user == UserGateway || user == UserScheduler || user == UserWorker
	return b, nil
}

// Close stops the watches and consumers the bus runs, lets the requests
// being served reply (requests arriving from now on are refused), then
// drains the connection: subscriptions finish the messages they hold
// before the connection closes. Closing again does nothing.
func (b *Bus) Close() error {
	b.tasks.Close()
	if err := b.NC.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		b.NC.Close()
		return fmt.Errorf("drain nats connection: %w", err)
	}
	for b.NC.IsDraining() {
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// Request sends req as JSON to subject and decodes the reply into resp.
// No responder gives an EUNAVAILABLE *gust.Error.
func (b *Bus) Request(ctx context.Context, subject string, req, resp any) error {
	data, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode request: %w", err)
	}
	msg, err := b.NC.RequestWithContext(ctx, subject, data)
	if errors.Is(err, nats.ErrNoResponders) {
		return gust.Errorf(gust.EUNAVAILABLE, "nothing answers on %s", subject)
	}
	if err != nil {
		return fmt.Errorf("request %s: %w", subject, err)
	}
	if err := json.Unmarshal(msg.Data, resp); err != nil {
		return fmt.Errorf("decode reply from %s: %w", subject, err)
	}
	return nil
}

// Handle serves requests on subject (in queue group queue, if not empty).
// Each request runs fn in its own goroutine with a context that ends when
// ctx does; fn's result is sent back as JSON. Once the bus closes, a
// request no longer reaches fn: it gets a gust.Reply with an EUNAVAILABLE
// error (every reply of the control plane embeds gust.Reply).
func (b *Bus) Handle(ctx context.Context, subject, queue string, fn func(ctx context.Context, data []byte) any) (func() error, error) {
	respond := func(m *nats.Msg, reply any) {
		out, err := json.Marshal(reply)
		if err != nil {
			b.logger.Error("encode reply", zap.String("subject", subject), zap.Error(err))
			return
		}
		if err := m.Respond(out); err != nil {
			b.logger.Warn("respond", zap.String("subject", subject), zap.Error(err))
		}
	}
	sub, err := b.NC.QueueSubscribe(subject, queue, func(m *nats.Msg) {
		// Requests of the control plane come from roles, on the subject
		// itself, with a role's inbox to answer (guard.go).
		if m.Subject != subject || !roleReply(m.Reply) {
			b.logger.Warn("dropped a request not made by a role", zap.String("subject", m.Subject), zap.String("reply", m.Reply))
			return
		}
		if !b.tasks.Go(func(context.Context) { respond(m, fn(ctx, m.Data)) }) {
			respond(m, gust.ReplyOf(gust.Errorf(gust.EUNAVAILABLE, "%s: shutting down", subject)))
		}
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", subject, err)
	}
	// Make sure the server has the subscription before callers request.
	if err := b.NC.Flush(); err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", subject, err)
	}
	return sub.Drain, nil
}

var _ gust.Requests = (*Bus)(nil)

// OpenState opens (creating if needed) the tables of the cluster's shared
// state. Heartbeats and pool status live in memory: they are rebuilt
// within seconds after a restart.
func OpenState(ctx context.Context, b *Bus) (*gust.State, error) {
	fns, err := OpenTable[gust.Function](ctx, b, TableConfig{Bucket: BucketFunctions})
	if err != nil {
		return nil, err
	}
	pls, err := OpenTable[gust.Placement](ctx, b, TableConfig{Bucket: BucketPlacements})
	if err != nil {
		return nil, err
	}
	wks, err := OpenTable[gust.WorkerInfo](ctx, b, TableConfig{Bucket: BucketWorkers, Memory: true, TTL: time.Minute})
	if err != nil {
		return nil, err
	}
	sts, err := OpenTable[gust.PoolStatus](ctx, b, TableConfig{Bucket: BucketStatus, Memory: true, TTL: time.Hour})
	if err != nil {
		return nil, err
	}
	return &gust.State{Functions: fns, Placements: pls, Workers: wks, Status: sts}, nil
}

// RequestRaw sends data with headers on subject and returns the reply's
// data.
func (b *Bus) RequestRaw(ctx context.Context, subject string, data []byte, header map[string][]string) ([]byte, error) {
	msg, err := b.NC.RequestMsgWithContext(ctx, &nats.Msg{Subject: subject, Data: data, Header: nats.Header(header)})
	if errors.Is(err, nats.ErrNoResponders) {
		return nil, gust.Errorf(gust.EUNAVAILABLE, "nothing answers on %s", subject)
	}
	if err != nil {
		return nil, fmt.Errorf("request %s: %w", subject, err)
	}
	return msg.Data, nil
}

// ensureStream makes sure stream cfg.Name exists. The provisioning
// connection creates it or updates it to cfg; a role's connection binds to
// it as it is, and creates it only when it is missing (a server without
// `gust nats`, which nothing provisions).
func (b *Bus) ensureStream(ctx context.Context, cfg jetstream.StreamConfig) error {
	if b.provision {
		cfg.Replicas = b.replicas
		_, err := b.JS.CreateOrUpdateStream(ctx, cfg)
		return err
	}
	_, err := b.JS.Stream(ctx, cfg.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if b.bindOnly {
			return fmt.Errorf("stream %s does not exist yet (`gust nats` creates it): %w", cfg.Name, err)
		}
		_, err = b.JS.CreateStream(ctx, cfg)
	}
	return err
}

// ensureKV is ensureStream for a KV bucket.
func (b *Bus) ensureKV(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	if b.provision {
		cfg.Replicas = b.replicas
		return b.JS.CreateOrUpdateKeyValue(ctx, cfg)
	}
	kv, err := b.JS.KeyValue(ctx, cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		if b.bindOnly {
			return nil, fmt.Errorf("bucket %s does not exist yet (`gust nats` creates it): %w", cfg.Bucket, err)
		}
		kv, err = b.JS.CreateKeyValue(ctx, cfg)
	}
	return kv, err
}
