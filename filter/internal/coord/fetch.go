package coord

import (
	"github.com/kagenti/token-exchange-filter/filter/internal/cache"
	"github.com/kagenti/token-exchange-filter/filter/internal/flight"
	"github.com/kagenti/token-exchange-filter/filter/internal/oauth"
)

// A source is what a flight fetches. Both kinds run through the same steps: a flight per key
// per VM (flight.Registry), a lease per key per Envoy (claim), the callout (form), the answer
// (result), waiting on the worker that holds the lease (poll) and taking it over, and the
// deadline sweep (abandoned, expired). Only what differs lives in a source.
type source interface {
	// claim takes the Envoy-wide lease for f. True: send our own callout. False: f was settled
	// from shared data, or waits on the worker holding the lease (f.Remote).
	claim(f *flight.Flight, now int64) bool
	// form is the callout's body.
	form(f *flight.Flight) []byte
	// count records an answer in the metrics.
	count(fail *oauth.Failure)
	// result stores an answer and settles waiters (nil for a late answer of an abandoned flight).
	result(key string, tok oauth.Token, fail *oauth.Failure, waiters []uint32, now int64)
	// poll ends a wait on another worker once its result is in shared data, or takes over.
	poll(f *flight.Flight, now int64)
	// abandoned: f's deadline passed with no answer.
	abandoned(f *flight.Flight, now int64)
	// expired settles a request whose own deadline passed while held on this source.
	expired(req *Request)
	// flightDeadline is the deadline of a flight req starts.
	flightDeadline(req *Request, now int64) int64
	// full settles a request that the hold tables have no room for.
	full(req *Request)
}

// serviceFlightKey names the service-account fetch among the flights. Exchange flights are
// keyed by 32 raw hash bytes and refreshes by 33 (refreshFlightPrefix), so this 3-byte key
// cannot collide with them. It is read in one place only: sourceFor.
const serviceFlightKey = "\x00sa"

// sourceFor is the source of a flight key.
func (w *Worker) sourceFor(key string) source {
	if key == serviceFlightKey {
		return &w.service
	}
	if len(key) == len(refreshFlightPrefix)+len(cache.Key{}) && key[:len(refreshFlightPrefix)] == refreshFlightPrefix {
		return &w.refresh
	}
	return &w.exchange
}

func (w *Worker) sourceOf(f *flight.Flight) source { return w.sourceFor(f.Key) }

// hold parks req on the flight for key, starting the flight when it is the first.
func (w *Worker) hold(req *Request, key string, src source, subject, audience, scope string) {
	now := w.host.NowMs()
	f, started, err := w.flights.Hold(req.id, key, req.deadlineMs, src.flightDeadline(req, now))
	if err != nil {
		w.warns.warn(w, "full", now, "too many requests held on this worker; settling at once")
		src.full(req)
		return
	}
	more := req.beyond() // every request in w.held has its beyondHit (OnTick relies on it)
	if more.waitingFor == "" {
		w.host.Count(RequestsHeld, 1)
	}
	more.waitingFor = key
	w.held[req.id] = req
	if !started {
		w.count(RequestsJoined)
		return
	}
	f.Subject, f.Audience, f.Scope = subject, audience, scope
	w.launch(f)
}

// cacheKey turns a flight key back into the cache key it was made from.
func cacheKey(key string) (k cache.Key) {
	copy(k[:], key)
	return k
}
