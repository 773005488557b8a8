package e2e

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/kagenti/token-exchange-filter/e2e/idp"
)

func queueUser(i int) string { return "queue-user-" + strconv.Itoa(i) }

// Envoy keeps a shared queue after the VM that registered it dies (proxy-wasm-cpp-host
// src/shared_queue.cc: only deleteByVmId erases queues, and enqueue appends to any queue it
// finds). The canary VM runs start-up and dies at once, so a VM that joined the waker list at
// start-up would collect one item per finished exchange in Envoy's heap, forever; so would the
// root contexts of a configuration that was updated. What waits in queues must stay flat however
// many exchanges finish, across a configuration update half-way. QUEUE_EXCHANGES=10000 runs the
// long form.
func TestE2E_QueueItemsStayFlat(t *testing.T) {
	n := 400
	if v := os.Getenv("QUEUE_EXCHANGES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n <= 0 {
			t.Fatalf("QUEUE_EXCHANGES=%q", v)
		}
	}
	// Thousands of new users as fast as they come: the new-key bucket is not what this measures.
	e := newEnv(t, envOptions{plugin: exchangeUnlimited})
	e.serviceTokenReady()
	for i := -1; i < n; i++ {
		if err := e.idp.AddUser(idp.User{Username: queueUser(i), Password: "pw"}); err != nil {
			t.Fatal(err)
		}
	}
	// Let every worker tick (and join the waker list) before counting.
	e.wantUserToken(e.get("/", e.userToken(queueUser(-1))), queueUser(-1))
	exchanges := func() uint64 { v, _ := e.proxy.Metric("token_exchange.exchange.success"); return v }
	before := exchanges()
	for i := 0; i < n; i++ {
		if i == n/2 {
			// An operator edits the plugin configuration: every VM gets a new root context.
			if err := e.proxy.Reconfigure(0, e.fill(exchangeUnlimited+`,"timeoutMs":4000`)); err != nil {
				t.Fatal(err)
			}
		}
		name := queueUser(i)
		e.wantUserToken(e.get("/", e.userToken(name)), name)
		// The replaced root contexts left the waker list in their on_done: nothing is sent to
		// their queues (before, they were woken until their records went stale, 5 s).
		if i > n/2 && e.proxy.DeadQueueItems() > 0 {
			t.Fatalf("exchange %d: %d items wait in the queues of gone root contexts", i, e.proxy.DeadQueueItems())
		}
	}
	if got := exchanges() - before; got != uint64(n) {
		t.Fatalf("%d exchanges for %d new users", got, n)
	}
	// Live VMs drain their queues on each wake-up; wait for those in flight to land.
	const maxPending = 8 // a wake-up or two per live VM still on its way
	var items, bytes int
	err := e.proxy.WaitFor(5*time.Second, func() bool {
		items, bytes = e.proxy.QueueItems()
		return items <= maxPending
	})
	t.Logf("%d finished exchanges: %d items (%d bytes) waiting in shared queues", n, items, bytes)
	if err != nil {
		t.Fatalf("after %d exchanges %d items (%d bytes) wait in shared queues, want at most %d: a dead VM's queue grows", n, items, bytes, maxPending)
	}
}

// No VM that never serves registers a queue: the canary (started, configured, dropped) leaves
// none behind in Envoy's heap. (The module of the previous round left one: it registered in
// OnPluginStart.)
func TestE2E_CanaryLeavesNoQueue(t *testing.T) {
	e := newEnv(t, envOptions{workers: 2})
	e.idp.AddUser(idp.User{Username: "alice", Password: "pw"})
	e.wantUserToken(e.get("/", e.userToken("alice")), "alice")
	if n := e.proxy.DeadQueues(); n != 0 {
		t.Fatalf("%d queues whose VM is gone, want 0", n)
	}
}
