package plugin

import (
	"errors"
	"math/rand/v2"
	"time"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/kagenti/token-exchange-filter/filter/internal/cache"
	"github.com/kagenti/token-exchange-filter/filter/internal/coord"
	"github.com/kagenti/token-exchange-filter/filter/internal/oauth"
)

// nowMs is the monotonic clock shared by every worker of the Envoy process, in milliseconds,
// for everything the workers coordinate on (leases, deadlines, back-offs, cache expiry): a
// wall-clock step changes none of it. wallMs is the wall clock in Unix milliseconds, only for
// a JWT's exp. Go-mode tests replace both to move time without sleeping.
var (
	nowMs  = monotonicMs
	wallMs = func() int64 { return time.Now().UnixMilli() }
)

// wasmHost is coord.Host over proxy-wasm.
type wasmHost struct {
	metrics *metrics
	// vmID is the vm_id other VMs' queues are registered under (Istio's is "").
	vmID string
}

func newWasmHost() *wasmHost {
	h := &wasmHost{metrics: newMetrics()}
	if v, err := proxywasm.GetProperty([]string{"plugin_vm_id"}); err == nil {
		h.vmID = string(v)
	}
	return h
}

func (*wasmHost) NowMs() int64   { return nowMs() }
func (*wasmHost) WallMs() int64  { return wallMs() }
func (*wasmHost) Random() uint64 { return rand.Uint64() }

func (*wasmHost) RegisterQueue(name string) (uint32, error) {
	return proxywasm.RegisterSharedQueue(name)
}
func (h *wasmHost) ResolveQueue(name string) (uint32, error) {
	return proxywasm.ResolveSharedQueue(h.vmID, name)
}
func (*wasmHost) Enqueue(q uint32, item []byte) error { return proxywasm.EnqueueSharedQueue(q, item) }
func (*wasmHost) Dequeue(q uint32) ([]byte, error)    { return proxywasm.DequeueSharedQueue(q) }

func (h *wasmHost) Dispatch(cluster string, headers [][2]string, body []byte, timeoutMs uint32, onAnswer func(coord.Answer)) error {
	_, err := proxywasm.DispatchHttpCall(cluster, headers, body, nil, timeoutMs,
		func(numHeaders, bodySize, _ int) { onAnswer(readAnswer(numHeaders, bodySize)) })
	return err
}

// readAnswer reads a callout's answer during its callback.
func readAnswer(numHeaders, bodySize int) coord.Answer {
	a := coord.Answer{NumHeaders: numHeaders}
	if numHeaders > 0 {
		if headers, err := proxywasm.GetHttpCallResponseHeaders(); err == nil {
			a.Status = atoiStatus(headerValue(headers, ":status"))
		}
	}
	if bodySize > 0 {
		// One byte past the limit is enough for the parser to reject an over-size body.
		n := min(bodySize, oauth.MaxBodyBytes+1)
		a.Body, _ = proxywasm.GetHttpCallResponseBody(0, n)
	}
	return a
}

func (*wasmHost) Focus(stream uint32) error                 { return proxywasm.SetEffectiveContext(stream) }
func (*wasmHost) SetRequestHeader(name, value string) error { return setRequestHeader(name, value) }
func (*wasmHost) ResumeRequest() error                      { return proxywasm.ResumeHttpRequest() }
func (*wasmHost) SendReply(status uint32, headers [][2]string, body []byte) error {
	return proxywasm.SendHttpResponse(status, headers, body, -1)
}

func (*wasmHost) Log(level coord.Level, msg string) {
	switch level {
	case coord.Debug:
		proxywasm.LogDebug(msg)
	case coord.Info:
		proxywasm.LogInfo(msg)
	case coord.Warn:
		proxywasm.LogWarn(msg)
	default:
		proxywasm.LogError(msg)
	}
}

func (h *wasmHost) Count(m coord.Metric, delta int64) { h.metrics.add(m, delta) }

// logError logs before a worker exists (configuration errors).
func logError(msg string) { proxywasm.LogError(coord.LogPrefix + msg) }

// sharedStore is cache.Store over Envoy's shared data.
type sharedStore struct{}

func (sharedStore) Get(key string) ([]byte, uint32, error) { return sharedData(key) }

// Peek is Get with the value lent until the current callback returns (cache.Peeker).
func (sharedStore) Peek(key string) ([]byte, uint32, error) { return peekSharedData(key) }

// errSharedDataRefused: the host answered a shared-data read with neither a value nor NotFound.
var errSharedDataRefused = errors.New("shared data read refused")

func (sharedStore) Set(key string, value []byte, cas uint32) error {
	err := proxywasm.SetSharedData(key, value, cas)
	if errors.Is(err, types.ErrorStatusCasMismatch) {
		return cache.ErrCasMismatch
	}
	return err
}

// headerValue returns the value of name in a header list (names are lower-case on the wire).
func headerValue(headers [][2]string, name string) string {
	for _, h := range headers {
		if h[0] == name {
			return h[1]
		}
	}
	return ""
}

// atoiStatus parses an HTTP status code; anything else is 0.
func atoiStatus(s string) int {
	if len(s) != 3 {
		return 0
	}
	n := 0
	for i := 0; i < 3; i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int(c-'0')
	}
	return n
}
