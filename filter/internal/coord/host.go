// Package coord makes every decision of the filter, without a host: for each request "use this
// token / hold it / answer N", for each callout answer, tick and wake-up, and the coordination
// of the workers of one Envoy through shared data (one exchange per key, leases and take-over,
// back-off, the service-account token's lifecycle, deadlines).
//
// It reaches the world only through Host: shared data (through the cache package's Store), its
// own shared queue and the other workers', callouts, the clock, randomness, and effects on
// streams. filter/internal/plugin adapts proxy-wasm's callbacks to it; the deterministic
// simulator in this package's tests runs many Workers over one simulated Envoy.
//
// Structure:
//
//	Worker   one VM (one Envoy worker): tables of flights and held requests, tick, queue
//	Request  one HTTP stream: decides on request headers, drops refused tokens on a 401
//	source   what a flight fetches: an exchange for one user token (exchangeSource) or the
//	         service-account token (serviceSource); both run through the same flight, lease,
//	         wait-on-another-worker and take-over steps in fetch.go
package coord

import "github.com/kagenti/token-exchange-filter/filter/internal/oauth"

// Host is what a Worker needs from the proxy. Every method must be safe to call at any time
// from the Worker's callbacks; errors are reported, never panicked.
type Host interface {
	// NowMs is a monotonic clock in milliseconds shared by every worker of the process (Envoy's
	// steady clock): leases, deadlines, back-offs and cache expiry, which workers compare
	// through shared data, use it, so a wall-clock step changes nothing.
	NowMs() int64
	// WallMs is the wall clock in Unix milliseconds (it may step): only for a JWT's exp.
	WallMs() int64
	// Random returns a random 64-bit number (owner ids, jitter).
	Random() uint64

	// RegisterQueue registers this VM's own queue; later enqueues to it wake this VM's
	// OnQueueReady. ResolveQueue finds another VM's queue by name (within this plugin's
	// vm_id). Enqueue appends an item; Dequeue takes one (an error when empty or unknown).
	RegisterQueue(name string) (uint32, error)
	ResolveQueue(name string) (uint32, error)
	Enqueue(queue uint32, item []byte) error
	Dequeue(queue uint32) ([]byte, error)

	// Dispatch sends a callout through cluster; onAnswer runs once when it answers (or never,
	// if the host loses it). An error means nothing was sent and onAnswer never runs.
	Dispatch(cluster string, headers [][2]string, body []byte, timeoutMs uint32, onAnswer func(Answer)) error

	// Focus makes stream the target of the stream calls that follow; it fails when the host no
	// longer knows the stream. Called before settling a held stream from a root callback.
	Focus(stream uint32) error
	// SetRequestHeader, ResumeRequest and SendReply act on the current stream.
	SetRequestHeader(name, value string) error
	ResumeRequest() error
	SendReply(status uint32, headers [][2]string, body []byte) error

	// Log writes one line. msg never contains a token or secret.
	Log(level Level, msg string)
	// Count adds delta to a metric.
	Count(m Metric, delta int64)
}

// Answer is what a callout brought back, read during its callback.
type Answer struct {
	NumHeaders int
	Status     int // 0 when there was no (valid) :status
	Body       []byte
}

// RequestHeaders is the request header map of the stream being decided.
type RequestHeaders interface {
	// Get is the first value of name. It is valid only until the callback it was read in
	// returns (the host may lend it scratch memory): what outlives the callback is a copy.
	Get(name string) (string, bool)
	Remove(name string)
	// Count is how many values of name the request has (it may read every header: it is
	// called only when a token is about to be validated, never on a memo hit).
	Count(name string) int
	// RemoveTakesAll reports whether Remove takes every value of name at once (Envoy), not one.
	RemoveTakesAll() bool
	// Size is the header map's byte size as Envoy counts it, the sum of every name's and
	// value's length; false if the host cannot tell.
	Size() (int, bool)
}

// Action is what OnRequestHeaders tells the host.
type Action uint8

const (
	Continue Action = iota // the request goes on now
	Pause                  // held, or answered locally
)

// Level is a log level.
type Level uint8

const (
	Debug Level = iota
	Info
	Warn
	Error
)

// Metric names one counter or gauge; the host maps it to its own metric (see plugin/metrics.go).
type Metric uint8

const (
	ExchangeSuccess Metric = iota
	ExchangeFailureTransient
	ExchangeFailureSubjectRejected
	ExchangeFailureConfiguration
	ExchangeFailureMalformed
	CacheHit
	CacheMiss
	FallbackNoUserToken
	FallbackInvalidUserToken
	FallbackExpiredUserToken
	FallbackRateLimited
	FallbackExchangeFailed
	Reply401
	Reply502
	Reply503
	RequestsHeld // gauge
	RequestsJoined
	ServiceFetchSuccess
	ServiceFetchFailure
	RequestsBackedOff
	RequestsPassedThrough
	RefreshStarted
	RefreshSuccess
	RefreshFailure
	NumMetrics
)

func exchangeFailureMetric(c oauth.Class) (Metric, bool) {
	switch c {
	case oauth.Transient:
		return ExchangeFailureTransient, true
	case oauth.SubjectRejected:
		return ExchangeFailureSubjectRejected, true
	case oauth.Configuration:
		return ExchangeFailureConfiguration, true
	case oauth.Malformed:
		return ExchangeFailureMalformed, true
	}
	return 0, false
}
