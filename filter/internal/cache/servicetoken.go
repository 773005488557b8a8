package cache

import "math"

// ServiceToken is the service-account (client-credentials) token, shared by all workers so that
// one fetch serves them all.
type ServiceToken struct {
	Token        string
	ExpiresAtMs  int64 // not usable from then on (skew already subtracted by the caller)
	RefreshAtMs  int64 // a worker should start fetching a new one from then on
	ObtainedAtMs int64 // when it was fetched: an upstream 401 drops only a token in use a while
}

// droppedMs marks a record dropped after an upstream 401: no nowMs is before it, and any real
// token put afterwards expires later, so it replaces the record.
const droppedMs = math.MinInt64

// ServiceToken returns the shared service-account token if a record decodes and nowMs is
// before its expiry.
func (c *Cache) ServiceToken(nowMs int64) (ServiceToken, bool) {
	v, _, err := c.store.Get(c.saKey)
	if err != nil {
		return ServiceToken{}, false
	}
	r, ok := decodeService(v)
	if !ok || nowMs >= r.expiresAtMs {
		return ServiceToken{}, false
	}
	return ServiceToken{Token: string(r.token), ExpiresAtMs: r.expiresAtMs, RefreshAtMs: r.refreshAtMs, ObtainedAtMs: r.obtainedAtMs}, true
}

// PutServiceToken stores t unless the stored record expires later than t (another worker
// fetched a fresher token meanwhile; it stays). Unlike Put it reports an empty token or one
// longer than MaxTokenBytes as ErrNotCacheable: the plugin must then keep the token per worker,
// or every worker would fetch its own.
func (c *Cache) PutServiceToken(t ServiceToken) error {
	if len(t.Token) == 0 || len(t.Token) > MaxTokenBytes {
		return ErrNotCacheable
	}
	o := op{kind: opPutService, token: t.Token, expiresAtMs: t.ExpiresAtMs, refreshAtMs: t.RefreshAtMs, nowMs: t.ObtainedAtMs}
	return c.apply(c.saKey, &o)
}

// DropServiceToken marks the stored record expired if it still holds token and that token was
// obtained at least minAgeMs before nowMs. An upstream 401 on a request that carried an old
// token must not drop the newer one another worker stored since, and a fresh token stays, so
// that anonymous requests to a path answering 401 cost at most one fetch per minAgeMs.
// It reports whether the token was dropped.
func (c *Cache) DropServiceToken(token string, nowMs, minAgeMs int64) (bool, error) {
	o := op{kind: opDropService, token: token, nowMs: nowMs, minAgeMs: minAgeMs}
	err := c.apply(c.saKey, &o)
	return o.removed, err
}

func (o *op) modifyPutService(cur []byte) ([]byte, bool) {
	if r, ok := decodeService(cur); ok {
		if r.expiresAtMs > o.expiresAtMs {
			return nil, false
		}
		if r.expiresAtMs == o.expiresAtMs && r.refreshAtMs == o.refreshAtMs && string(r.token) == o.token {
			return nil, false // already there (a read-back after creating the key relies on it)
		}
	}
	return appendService(make([]byte, 0, serviceHeaderBytes+len(o.token)), o.expiresAtMs, o.refreshAtMs, o.nowMs, o.token), true
}

func (o *op) modifyDropService(cur []byte) ([]byte, bool) {
	r, ok := decodeService(cur)
	if !ok || r.expiresAtMs == droppedMs || string(r.token) != o.token || o.tooYoung(r.obtainedAtMs) {
		return nil, false
	}
	// The token stays in the record only so that it keeps its strict format (length ≥ 1).
	o.removed = true
	return appendService(make([]byte, 0, len(cur)), droppedMs, droppedMs, r.obtainedAtMs, r.token), true
}
