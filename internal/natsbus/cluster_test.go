package natsbus_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/internal/natsbus"
	"github.com/gustfaas/gust/internal/natsbus/natsbustest"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// freeAddr is a free loopback address: a cluster's route addresses must
// be known before its servers start, since each routes to the others.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

// runClusterServer starts server name of cluster "test" with its routes
// on listen, routing to routes, with users and the route password pw
// shared by the cluster.
func runClusterServer(t *testing.T, name, listen string, users map[string]string, pw string, routes []string) *natsbus.Server {
	t.Helper()
	return runClusterServerIn(t, t.TempDir(), name, listen, users, pw, routes)
}

// runClusterServerIn is runClusterServer storing in dir (a restart passes
// the dir of the server it restarts).
func runClusterServerIn(t *testing.T, dir, name, listen string, users map[string]string, pw string, routes []string) *natsbus.Server {
	t.Helper()
	srv, err := natsbus.RunServer(natsbus.ServerConfig{
		Listen: "127.0.0.1:0", StoreDir: dir, Name: name, Users: users,
		Cluster: &natsbus.ClusterConfig{Name: "test", Listen: listen, Routes: routes, User: "route", Password: pw},
	}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("run nats server %s: %v", name, err)
	}
	t.Cleanup(srv.Shutdown)
	return srv
}

// TestCluster_R3SurvivesServerLoss: on three clustered servers,
// provisioning with Replicas 3 gives every stream and bucket (in-memory
// ones too) three replicas, once the cluster has its JetStream meta
// leader; a role connected with the list of the three servers keeps
// enqueueing async calls and reading its buckets after the server it
// was connected to stops, and nothing enqueued before is lost.
func TestCluster_R3SurvivesServerLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("three NATS servers: not short")
	}
	users := natsbustest.Users(t)
	addrs := []string{freeAddr(t), freeAddr(t), freeAddr(t)}
	var routes []string
	for _, a := range addrs {
		routes = append(routes, "nats://"+a)
	}
	// Each server is given every route, its own too, as a cluster's
	// servers often are: the server skips its own.
	a := runClusterServer(t, "a", addrs[0], users, "route-pw", routes)
	b := runClusterServer(t, "b", addrs[1], users, "route-pw", routes)
	c := runClusterServer(t, "c", addrs[2], users, "route-pw", routes)

	pc := a.ProvisionConfig("test-provision")
	pc.Replicas = 3
	prov, err := natsbus.ConnectWith(pc, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("connect to provision: %v", err)
	}
	defer prov.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// Every server provisions, as `gust nats` does: the meta leader
	// creates, the others wait for it.
	provErr := make(chan error, 3)
	for _, s := range []*natsbus.Server{a, b, c} {
		go func() {
			pc := s.ProvisionConfig("test-provision")
			pc.Replicas = 3
			provErr <- natsbus.ProvisionCluster(ctx, pc, zaptest.NewLogger(t), time.Hour, 0, time.Minute)
		}()
	}
	for range 3 {
		if err := <-provErr; err != nil {
			t.Fatalf("provision with 3 replicas: %v", err)
		}
	}
	for _, s := range []string{natsbus.StreamAsync, natsbus.StreamDeadLetters, natsbus.StreamMeter,
		"KV_" + natsbus.BucketFunctions, "KV_" + natsbus.BucketWorkers, "KV_" + natsbus.BucketStatus, "KV_" + natsbus.BucketSecrets} {
		st, err := prov.JS.Stream(ctx, s)
		if err != nil {
			t.Fatalf("stream %s: %v", s, err)
		}
		if r := st.CachedInfo().Config.Replicas; r != 3 {
			t.Errorf("stream %s has %d replicas, want 3", s, r)
		}
	}

	var urls []string
	for _, s := range []*natsbus.Server{a, b, c} {
		urls = append(urls, s.UserURL(natsbus.UserGateway))
	}
	gw, err := natsbus.ConnectWith(natsbus.ClientConfig{URL: strings.Join(urls, ","), Name: "test-gateway"}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("connect as gateway to the list of servers: %v", err)
	}
	defer gw.Close()
	st, err := natsbus.OpenState(ctx, gw)
	if err != nil {
		t.Fatalf("open state as gateway: %v", err)
	}
	fn := gust.Function{Version: 7}
	if _, err := st.Functions.Put(ctx, "f", fn); err != nil {
		t.Fatalf("put function: %v", err)
	}
	enqueue := func(id string) {
		t.Helper()
		var err error
		// A new stream leader is elected within seconds of a server's
		// loss; a publish sent as the link moved may go unanswered, so
		// each attempt has its own deadline, as a gateway's call has.
		for i := 0; i < 30; i++ {
			actx, acancel := context.WithTimeout(ctx, 5*time.Second)
			err = gw.Enqueue(actx, gust.SubjectAsyncPrefix+"ns.f", id, []byte(id))
			acancel()
			if err == nil {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Fatalf("enqueue %s: %v", id, err)
	}
	for i := 0; i < 5; i++ {
		enqueue(fmt.Sprintf("before-%d", i))
	}

	// Stop the server the gateway is connected to.
	connected := gw.NC.ConnectedUrl()
	for _, s := range []*natsbus.Server{a, b, c} {
		if strings.HasSuffix(connected, strings.TrimPrefix(s.ClientURL(), "nats://")) {
			s.Shutdown()
		}
	}
	for i := 0; i < 5; i++ {
		enqueue(fmt.Sprintf("after-%d", i))
	}
	if _, reconnects := gw.LinkState(); reconnects == 0 {
		t.Errorf("the gateway's connection did not move to another server")
	}
	var got gust.Function
	for i := 0; i < 30; i++ {
		actx, acancel := context.WithTimeout(ctx, 5*time.Second)
		got, _, err = st.Functions.Get(actx, "f")
		acancel()
		if err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil || got.Version != 7 {
		t.Fatalf("function after the loss of a server: %+v, %v", got, err)
	}
	info, err := gw.JS.Stream(ctx, natsbus.StreamAsync)
	if err != nil {
		t.Fatalf("async stream after the loss of a server: %v", err)
	}
	if n := info.CachedInfo().State.Msgs; n != 10 {
		t.Errorf("async stream holds %d calls after the loss of a server, want the 10 enqueued", n)
	}
}

// helperServerEnv, set in the environment of a copy of this test binary,
// makes TestHelperClusterServer run a cluster server with the
// configuration it holds (JSON) until killed: a server that dies without
// handing its streams' leadership over, as on SIGKILL or a host's loss,
// which an in-process Shutdown cannot show.
const helperServerEnv = "GUST_NATSBUS_HELPER_SERVER"

func TestHelperClusterServer(t *testing.T) {
	raw := os.Getenv(helperServerEnv)
	if raw == "" {
		t.Skip("runs only as the helper server of TestCluster_LeaderKilledPausesLink")
	}
	var cfg natsbus.ServerConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		t.Fatalf("helper server config: %v", err)
	}
	if _, err := natsbus.RunServer(cfg, zap.NewNop()); err != nil {
		t.Fatalf("helper server: %v", err)
	}
	fmt.Println("helper server ready")
	select {} // until killed
}

// TestCluster_LeaderKilledPausesLink: when the server leading a watched
// table's stream is killed, the stream takes nothing until the others
// elect a leader (seconds); meanwhile the connection to a live server is
// up, but LinkState reports the link down, so that heartbeats lost to the
// election are not taken for dead workers; once the stream has a leader
// the link counts as come back (its reconnects grow), so silence counts
// from then and the watches start over.
func TestCluster_LeaderKilledPausesLink(t *testing.T) {
	if testing.Short() {
		t.Skip("three NATS servers: not short")
	}
	users := natsbustest.Users(t)
	addrs := []string{freeAddr(t), freeAddr(t), freeAddr(t)}
	var routes []string
	for _, a := range addrs {
		routes = append(routes, "nats://"+a)
	}
	// c runs in a process of its own, to be killed.
	cfg, err := json.Marshal(natsbus.ServerConfig{
		Listen: "127.0.0.1:0", StoreDir: t.TempDir(), Name: "c", Users: users,
		Cluster: &natsbus.ClusterConfig{Name: "test", Listen: addrs[2], Routes: routes, User: "route", Password: "route-pw"},
	})
	if err != nil {
		t.Fatal(err)
	}
	helper := exec.Command(os.Args[0], "-test.run=^TestHelperClusterServer$", "-test.count=1")
	helper.Env = append(os.Environ(), helperServerEnv+"="+string(cfg))
	helper.Stderr = os.Stderr
	if err := helper.Start(); err != nil {
		t.Fatalf("start the helper server: %v", err)
	}
	killed := false
	kill := func() {
		if !killed {
			killed = true
			_ = helper.Process.Kill()
			_ = helper.Wait()
		}
	}
	defer kill()
	a := runClusterServer(t, "a", addrs[0], users, "route-pw", routes)
	runClusterServer(t, "b", addrs[1], users, "route-pw", routes)

	pc := a.ProvisionConfig("test-provision")
	pc.Replicas = 3
	prov, err := natsbus.ConnectWith(pc, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("connect to provision: %v", err)
	}
	defer prov.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := natsbus.ProvisionCluster(ctx, pc, zaptest.NewLogger(t), time.Hour, 0, 2*time.Minute); err != nil {
		t.Fatalf("provision with 3 replicas: %v", err)
	}
	// Make c lead the workers' bucket: a stepdown names it preferred.
	stream := "KV_" + natsbus.BucketWorkers
	for i := 0; ; i++ {
		st, err := prov.JS.Stream(ctx, stream)
		if err == nil && st.CachedInfo().Cluster != nil && st.CachedInfo().Cluster.Leader == "c" {
			break
		}
		if i == 50 {
			t.Fatalf("server c did not take the lead of %s: %v", stream, err)
		}
		_, _ = prov.NC.Request("$JS.API.STREAM.LEADER.STEPDOWN."+stream, []byte(`{"placement":{"preferred":"c"}}`), 5*time.Second)
		time.Sleep(500 * time.Millisecond)
	}

	gw, err := natsbus.ConnectWith(natsbus.ClientConfig{URL: a.UserURL(natsbus.UserGateway), Name: "test-gateway"}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("connect as gateway: %v", err)
	}
	defer gw.Close()
	st, err := natsbus.OpenState(ctx, gw)
	if err != nil {
		t.Fatalf("open state as gateway: %v", err)
	}
	if err := st.Workers.Watch(ctx, ">", func(gust.Change[gust.WorkerInfo]) {}); err != nil {
		t.Fatalf("watch workers: %v", err)
	}
	up, before := gw.LinkState()
	if !up {
		t.Fatalf("link down before any server died")
	}
	// eventually waits, within bound, for cond.
	eventually := func(what string, bound time.Duration, cond func() bool) {
		t.Helper()
		for end := time.Now().Add(bound); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			if cond() {
				return
			}
		}
		t.Fatalf("%s: not within %s", what, bound)
	}
	pst, err := natsbus.OpenState(ctx, prov)
	if err != nil {
		t.Fatalf("open state to write: %v", err)
	}
	kill()
	// A heartbeat written as the leader dies is sent again until the new
	// leader takes it.
	pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
	defer pcancel()
	put := make(chan error, 1)
	go func() {
		_, err := pst.Workers.Put(pctx, "w1", gust.WorkerInfo{ID: "w1"})
		put <- err
	}()
	eventually("link reported down while the workers' stream has no leader", 30*time.Second, func() bool {
		up, _ := gw.LinkState()
		return !up
	})
	if !gw.NC.IsConnected() {
		t.Errorf("the connection to a server still up was lost")
	}
	// The link is back once the watch has started over, which needs the
	// cluster's meta leader besides the stream's: on a loaded host (a CI
	// run with every package's tests at once) that election alone took
	// half a minute, and past fabricMaxStall (30 s) the link counts as
	// back anyway.
	eventually("link back once the stream has a leader", time.Minute, func() bool {
		up, n := gw.LinkState()
		return up && n > before
	})
	if err := <-put; err != nil {
		t.Errorf("put into the workers' bucket as its leader died: %v", err)
	}
}
