// Package flight coordinates the requests of one VM that wait for the same token: at most one
// fetch per key is in flight, every held request has a deadline, and a fetch that never
// answers is abandoned. It knows nothing of the host: the plugin asks it who to wake.
//
// All state is per VM (per Envoy worker) and bounded: a full registry refuses new requests
// instead of growing, and the caller falls back as on any failure.
package flight

import (
	"errors"
	"slices"
)

// ErrFull means the registry holds its maximum of requests or flights.
var ErrFull = errors.New("flight: too many held requests")

// Flight is one fetch of one key (an exchange for one user, or the service-account token).
type Flight struct {
	Key string
	// Subject is what the fetch needs (the user token for an exchange). It lives only while
	// the flight does and is never logged.
	Subject string
	// Audience and Scope of the exchange (the matching rule's, or tokenExchange's).
	Audience, Scope string
	// Dispatched is set once the callout is sent (or the flight waits on another worker); until
	// then the flight waits for the root context.
	Dispatched bool
	// Remote: another worker holds the lease on this key; the flight waits for its result in
	// shared data instead of calling the IdP.
	Remote bool
	// DeadlineMs is when the flight is abandoned if its callout never answered.
	DeadlineMs int64

	waiters []uint32 // held request contexts, in arrival order
}

type hold struct {
	key        string
	deadlineMs int64
}

// Registry is the per-VM table of flights and held requests.
type Registry struct {
	maxHeld    int
	maxFlights int
	flights    map[string]*Flight
	// order lists the flights in the order they started: every walk over the flights follows
	// it, so that one input always gives the same callouts in the same order (the coordinator's
	// simulation replays a seed exactly; map order would not).
	order []*Flight
	held  map[uint32]hold
}

// New returns an empty registry bounded to maxHeld requests and maxFlights flights.
func New(maxHeld, maxFlights int) *Registry {
	return &Registry{
		maxHeld:    maxHeld,
		maxFlights: maxFlights,
		flights:    map[string]*Flight{},
		held:       map[uint32]hold{},
	}
}

// Hold registers request ctx as waiting for key until deadlineMs. When no flight for key
// exists, one is created (its deadline is flightDeadlineMs) and started is true: the caller
// must then get the fetch dispatched. A request already held is moved to the new key.
func (r *Registry) Hold(ctx uint32, key string, deadlineMs, flightDeadlineMs int64) (f *Flight, started bool, err error) {
	r.Drop(ctx)
	f = r.flights[key]
	if len(r.held) >= r.maxHeld || (f == nil && len(r.flights) >= r.maxFlights) {
		return nil, false, ErrFull
	}
	if f == nil {
		f = &Flight{Key: key, DeadlineMs: flightDeadlineMs}
		r.flights[key] = f
		r.order = append(r.order, f)
		started = true
	}
	f.waiters = append(f.waiters, ctx)
	r.held[ctx] = hold{key: key, deadlineMs: deadlineMs}
	return f, started, nil
}

// Start creates a flight for key with no waiter (a background fetch). It returns nil when a
// flight for key already exists or the registry is full.
func (r *Registry) Start(key string, flightDeadlineMs int64) *Flight {
	if r.flights[key] != nil || len(r.flights) >= r.maxFlights {
		return nil
	}
	f := &Flight{Key: key, DeadlineMs: flightDeadlineMs}
	r.flights[key] = f
	r.order = append(r.order, f)
	return f
}

// Get returns the flight for key, if one is in progress.
func (r *Registry) Get(key string) (*Flight, bool) {
	f, ok := r.flights[key]
	return f, ok
}

// Undispatched appends to dst every flight still waiting to be dispatched.
func (r *Registry) Undispatched(dst []*Flight) []*Flight {
	for _, f := range r.order {
		if !f.Dispatched {
			dst = append(dst, f)
		}
	}
	return dst
}

// Waiting is the number of requests held on f.
func (f *Flight) Waiting() int { return len(f.waiters) }

// RemoteFlights appends to dst every flight waiting on another worker's exchange.
func (r *Registry) RemoteFlights(dst []*Flight) []*Flight {
	for _, f := range r.order {
		if f.Remote {
			dst = append(dst, f)
		}
	}
	return dst
}

// Finish ends f and appends its still-held requests to dst, in arrival order. They are no
// longer held: the caller resumes or answers each. Finishing a flight twice is harmless.
func (r *Registry) Finish(f *Flight, dst []uint32) []uint32 {
	if r.flights[f.Key] == f {
		delete(r.flights, f.Key)
		for i, o := range r.order {
			if o == f {
				r.order = append(r.order[:i], r.order[i+1:]...)
				break
			}
		}
	}
	for _, ctx := range f.waiters {
		if h, ok := r.held[ctx]; ok && h.key == f.Key {
			delete(r.held, ctx)
			dst = append(dst, ctx)
		}
	}
	f.waiters = nil
	f.Subject = ""
	return dst
}

// Drop forgets request ctx (its client went away, or it was answered). Its flight goes on:
// the result still serves the cache and the other waiters.
func (r *Registry) Drop(ctx uint32) {
	h, ok := r.held[ctx]
	if !ok {
		return
	}
	delete(r.held, ctx)
	if f := r.flights[h.key]; f != nil {
		for i, w := range f.waiters {
			if w == ctx {
				f.waiters = append(f.waiters[:i], f.waiters[i+1:]...)
				break
			}
		}
	}
}

// IsHeld reports whether ctx is held, and for which key.
func (r *Registry) IsHeld(ctx uint32) (key string, ok bool) {
	h, ok := r.held[ctx]
	return h.key, ok
}

// Held is the number of held requests.
func (r *Registry) Held() int { return len(r.held) }

// Flights is the number of flights in progress.
func (r *Registry) Flights() int { return len(r.flights) }

// Expired removes every held request whose deadline is at or before nowMs and appends it to
// dst; it also abandons flights past their own deadline (a callout that never answered) and
// appends them to abandoned, their requests to dst. A late answer to an abandoned flight finds
// no flight and is ignored.
func (r *Registry) Expired(nowMs int64, dst []uint32, abandoned []*Flight) ([]uint32, []*Flight) {
	for i := 0; i < len(r.order); {
		if f := r.order[i]; f.DeadlineMs <= nowMs {
			dst = r.Finish(f, dst) // removes f from order
			abandoned = append(abandoned, f)
			continue
		}
		i++
	}
	start := len(dst)
	for ctx, h := range r.held {
		if h.deadlineMs <= nowMs {
			dst = append(dst, ctx)
		}
	}
	slices.Sort(dst[start:]) // in a fixed order, whatever the map's
	for _, ctx := range dst[start:] {
		r.Drop(ctx)
	}
	return dst, abandoned
}
