package natsbus

import (
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// The users of Gust's NATS server, one per role, each allowed the subjects
// that role needs and nothing else (docs/nats-security.md has the table).
const (
	// UserGust is every role at once: the single connection of `gust up`,
	// whose roles share one process, and the connection with which `gust
	// nats` creates the streams and buckets. Its password never leaves the
	// process that runs the server.
	UserGust      = "gust"
	UserGateway   = "gateway"
	UserScheduler = "scheduler"
	UserWorker    = "worker"
	// UserEvents is for publishers outside Gust: it publishes on trigger
	// subjects and receives the replies to its requests, nothing else.
	UserEvents = "events"
)

// Roles are the users of Gust's own processes (not UserEvents).
var Roles = []string{UserGust, UserGateway, UserScheduler, UserWorker}

// InboxPrefix is the prefix of the reply subjects of Gust's roles:
// InboxPrefix + "." + user. Outside publishers keep nats.go's _INBOX, so
// the events user may read its replies without seeing Gust's.
const InboxPrefix = "_GUST_INBOX"

// inboxPrefix is the inbox prefix of a connection as user: its own for a
// role, nats.go's default for anyone else.
func inboxPrefix(user string) string {
	for _, r := range Roles {
		if r == user {
			return InboxPrefix + "." + user
		}
	}
	return ""
}

// reserved are the subjects outside publishers may not publish on and
// Gust's trigger subscriptions may not take: Gust's own, JetStream's and
// the server's, and the reply subjects.
var reserved = []string{
	"gust.>", "$KV.>", "$JS.>", "$SYS.>", "$O.>", "$NRG.>", "$MQTT.>", "$G.>",
	"_INBOX.>", InboxPrefix + ".>", "_R_.>", BeatPrefix + ">",
}

// Streams and buckets, by the roles that use them.
var (
	// Every Gust stream: only UserGust creates or changes them.
	gustStreams = []string{StreamAsync, StreamDeadLetters, StreamMeter, StreamLogs}
	gustBuckets = []string{
		BucketFunctions, BucketPlacements, BucketWorkers, BucketStatus,
		BucketCalls, BucketIdempotency, BucketNamespaces, BucketKeys, BucketSecrets,
	}
)

// rights collects the publish and subscribe allow and deny lists of a user.
type rights struct {
	pub, sub, denyPub, denySub []string
	responses                  bool
}

// readKV lets a role read bucket: look it up, get keys (direct or
// through the stream), and watch it (an ordered consumer delivering to
// the role's inbox, with flow control). Its deliveries carry ack
// subjects: allowing them keeps the server from tracking each as a
// pending response (allow_responses) for an hour.
func (r *rights) readKV(buckets ...string) {
	for _, b := range buckets {
		s := "KV_" + b
		r.pub = append(r.pub,
			"$JS.API.STREAM.INFO."+s,
			"$JS.API.DIRECT.GET."+s, "$JS.API.DIRECT.GET."+s+".>",
			"$JS.API.STREAM.MSG.GET."+s,
			"$JS.API.CONSUMER.CREATE."+s, "$JS.API.CONSUMER.CREATE."+s+".>",
			"$JS.API.CONSUMER.INFO."+s+".*", "$JS.API.CONSUMER.DELETE."+s+".*",
			"$JS.FC."+s+".>", "$JS.ACK."+s+".>",
		)
	}
}

// writeKV lets a role read and write bucket (put, create, update, delete
// and purge are publishes on $KV.bucket.key).
func (r *rights) writeKV(buckets ...string) {
	r.readKV(buckets...)
	for _, b := range buckets {
		r.pub = append(r.pub, "$KV."+b+".>")
	}
}

// consume lets a role run durable pull consumers on stream: create, look
// up and delete them, fetch and acknowledge.
func (r *rights) consume(streams ...string) {
	for _, s := range streams {
		r.pub = append(r.pub,
			"$JS.API.STREAM.INFO."+s,
			"$JS.API.CONSUMER.CREATE."+s, "$JS.API.CONSUMER.CREATE."+s+".>",
			"$JS.API.CONSUMER.DURABLE.CREATE."+s+".*",
			"$JS.API.CONSUMER.INFO."+s+".*", "$JS.API.CONSUMER.DELETE."+s+".*",
			"$JS.API.CONSUMER.MSG.NEXT."+s+".*",
			"$JS.ACK."+s+".>", "$JS.FC."+s+".>",
		)
	}
}

// permissions returns what user may do, or nil for an unknown user.
func permissions(user string) *server.Permissions {
	var r rights
	switch user {
	case UserGust:
		// Everything but the server's own account traffic.
		r.pub, r.sub = []string{">"}, []string{">"}
		r.denyPub, r.denySub = []string{"$SYS.>"}, []string{"$SYS.>"}
		r.responses = true
	case UserGateway:
		// The API: the registry, access control, async calls and their
		// dead letters; reads placements, workers and pool status;
		// asks the scheduler to place; meters the calls it turns away and
		// keeps the billing store. Triggers: subscribes to any subject
		// that is not reserved, consumes from any stream that is not
		// Gust's own, and answers event requests (responses).
		r.writeKV(BucketFunctions, BucketPlacements, BucketNamespaces, BucketKeys, BucketSecrets, BucketCalls, BucketIdempotency)
		r.readKV(BucketWorkers, BucketStatus)
		// The workers' plain heartbeats (beats.go).
		r.sub = append(r.sub, BeatPrefix+"*")
		// The admin's drain of a worker: a request to it.
		r.pub = append(r.pub, "gust.worker.drain.*")
		r.pub = append(r.pub, "gust.scheduler.place", "gust.async.>", "gust.dlq.>", "gust.meter.>",
			"$JS.API.STREAM.MSG.DELETE."+StreamDeadLetters, "$JS.API.STREAM.PURGE."+StreamDeadLetters,
			// Gateways of the release that queued each async call under
			// a subject of its own read a queued call's message as its
			// status: kept while such gateways may still run.
			"$JS.API.STREAM.MSG.GET."+StreamAsync)
		r.consume(StreamAsync, StreamDeadLetters, StreamMeter)
		// Function logs: it reads them (ordered consumers), never
		// writes them.
		r.consume(StreamLogs)
		// Stream triggers: consumers on the operator's own streams. The
		// API of Gust's streams and buckets is limited above: the denials
		// keep these wildcards off them.
		r.pub = append(r.pub,
			"$JS.API.STREAM.INFO.*", "$JS.API.CONSUMER.CREATE.*", "$JS.API.CONSUMER.CREATE.*.>",
			"$JS.API.CONSUMER.DURABLE.CREATE.*.*", "$JS.API.CONSUMER.INFO.*.*", "$JS.API.CONSUMER.DELETE.*.*",
			"$JS.API.CONSUMER.MSG.NEXT.*.*", "$JS.ACK.>", "$JS.FC.>")
		r.sub = append(r.sub, ">")
		r.denySub = append(r.denySub, "gust.>", "$KV.>", "$JS.>", "$SYS.>", "_INBOX.>")
		for _, o := range Roles {
			if o != UserGateway {
				r.denySub = append(r.denySub, InboxPrefix+"."+o+".>")
			}
		}
		r.denyPub = append(r.denyPub, "$SYS.>", "$JS.API.STREAM.CREATE.>", "$JS.API.STREAM.UPDATE.>", "$JS.API.STREAM.DELETE.>")
		r.responses = true
	case UserScheduler:
		// Places functions: answers place requests, asks workers to
		// prepare, writes placements, removes workers gone silent.
		// Several elect their leader through its lease (BucketLeader);
		// a standby passes place requests on to the leader.
		r.writeKV(BucketPlacements, BucketWorkers, BucketLeader)
		r.readKV(BucketFunctions, BucketStatus)
		r.pub = append(r.pub, "gust.worker.prepare.*", "gust.scheduler.leader.place")
		r.sub = append(r.sub, "gust.scheduler.place", "gust.scheduler.leader.place", BeatPrefix+"*")
		r.responses = true
	case UserWorker:
		// Runs calls: heartbeats and pool status, reads the registry,
		// placements and secrets, answers prepare and drain requests,
		// publishes metering records.
		r.writeKV(BucketWorkers, BucketStatus)
		// Secrets it only reads: a right to put even one key would let
		// it roll the bucket up (Nats-Rollup: all), wiping every secret.
		r.readKV(BucketFunctions, BucketPlacements, BucketSecrets)
		r.pub = append(r.pub, "gust.meter.>", "$JS.API.STREAM.INFO."+StreamMeter)
		// Its instances' output, line by line (the log stream).
		r.pub = append(r.pub, SubjectLogsPrefix+">", "$JS.API.STREAM.INFO."+StreamLogs)
		r.sub = append(r.sub, "gust.worker.prepare.*", "gust.worker.drain.*")
		// Its plain heartbeats, and the others' (orphans.go).
		r.pub = append(r.pub, BeatPrefix+"*")
		r.sub = append(r.sub, BeatPrefix+"*")
		r.responses = true
	case UserEvents:
		r.pub = []string{">"}
		r.denyPub = reserved
		r.sub = []string{"_INBOX.>"}
		return r.permissions()
	default:
		return nil
	}
	if user != UserGust {
		r.sub = append(r.sub, InboxPrefix+"."+user+".>")
	}
	return r.permissions()
}

func (r rights) permissions() *server.Permissions {
	p := &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: dedup(r.pub), Deny: dedup(r.denyPub)},
		Subscribe: &server.SubjectPermission{Allow: dedup(r.sub), Deny: dedup(r.denySub)},
	}
	if r.responses {
		// Replies to requests received (place, prepare, event requests):
		// one reply each, within an hour (an event request waits for
		// its call, which may run long).
		p.Response = &server.ResponsePermission{MaxMsgs: 1, Expires: time.Hour}
	}
	return p
}

func dedup(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	s = append([]string(nil), s...)
	sort.Strings(s)
	out := s[:1]
	for _, x := range s[1:] {
		if x != out[len(out)-1] {
			out = append(out, x)
		}
	}
	return out
}

// users builds nats-server's user list: one per entry of passwords (user
// → password), each with its role's permissions.
func users(passwords map[string]string) ([]*server.User, error) {
	var us []*server.User
	for name, pw := range passwords {
		p := permissions(name)
		if p == nil {
			return nil, fmt.Errorf("nats user %q: not a Gust role or %q", name, UserEvents)
		}
		if pw == "" {
			return nil, fmt.Errorf("nats user %q: empty password", name)
		}
		us = append(us, &server.User{Username: name, Password: pw, Permissions: p})
	}
	sort.Slice(us, func(i, j int) bool { return us[i].Username < us[j].Username })
	return us, nil
}

// URLWithUser returns rawURL with user and password as its credentials,
// replacing any it had.
func URLWithUser(rawURL, user, password string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("nats url %q: want nats://host:port", redactURL(rawURL))
	}
	u.User = url.UserPassword(user, password)
	return u.String(), nil
}

// URLUser is the user named in rawURL, if any; rawURL may be a
// comma-separated list of a cluster's servers, each with its credentials
// or none: the first user named counts.
func URLUser(rawURL string) string {
	for _, one := range strings.Split(rawURL, ",") {
		u, err := url.Parse(strings.TrimSpace(one))
		if err == nil && u.User != nil {
			return u.User.Username()
		}
	}
	return ""
}

// redactURL hides the passwords of a URL, or of each URL of a
// comma-separated list, for messages and logs.
func redactURL(rawURL string) string {
	parts := strings.Split(rawURL, ",")
	for i, one := range parts {
		u, err := url.Parse(strings.TrimSpace(one))
		if err != nil {
			parts[i] = "(unparsable url)"
			continue
		}
		parts[i] = u.Redacted()
	}
	return strings.Join(parts, ",")
}
