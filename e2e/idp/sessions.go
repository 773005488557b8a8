package idp

import (
	"net/http"
	"sync"
	"time"
)

// Sessions, as Keycloak keeps them: a login (the password grant, or MintUserToken standing in
// for a browser login) starts a user session whose id is the access token's "sid" claim and the
// answer's "session_state". A token exchange verifies the subject token against its session
// (AuthenticationManager.verifyIdentityToken via TokenManager): after logout, or once the
// session is past its SSO Session Max, the exchange is 400 invalid_request "Invalid token" even
// though the token's exp is still ahead. The exchanged token belongs to the same session, and
// its lifetime is capped by what is left of the session (TokenManager caps the access token's
// expiration at the session's). Service-account tokens (client credentials) have no session.

// LogoutPath is Keycloak's end-session endpoint.
const LogoutPath = "/protocol/openid-connect/logout"

// DefaultSessionMax is Keycloak's default "SSO Session Max" (10 hours).
const DefaultSessionMax = 10 * time.Hour

type session struct {
	subject string
	started time.Time
	ended   bool
}

type sessions struct {
	mu   sync.Mutex
	max  time.Duration
	byID map[string]*session
}

func (s *sessions) start(subject string) string {
	id := newUUID()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byID == nil {
		s.byID = map[string]*session{}
	}
	s.byID[id] = &session{subject: subject, started: time.Now()}
	return id
}

func (s *sessions) maxLifetime() time.Duration {
	if s.max > 0 {
		return s.max
	}
	return DefaultSessionMax
}

// remaining is what is left of session id, false if it ended, expired or never existed.
func (s *sessions) remaining(id string) (time.Duration, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.byID[id]
	if e == nil || e.ended {
		return 0, false
	}
	left := time.Until(e.started.Add(s.maxLifetime()))
	return left, left > 0
}

func (s *sessions) end(match func(id string, e *session) bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for id, e := range s.byID {
		if !e.ended && match(id, e) {
			e.ended = true
			n++
		}
	}
	return n
}

// Logout ends every session of username (an administrator's "Sign out" of the user, or the user
// logging out everywhere) and returns how many there were.
func (p *IdP) Logout(username string) int {
	u, ok := p.user(username)
	if !ok {
		return 0
	}
	return p.sessions.end(func(_ string, e *session) bool { return e.subject == u.Subject })
}

// SetSessionMaxLifetime sets the realm's SSO Session Max (0: Keycloak's default, 10 hours). It
// applies to sessions already started too, as in Keycloak.
func (p *IdP) SetSessionMaxLifetime(d time.Duration) {
	p.sessions.mu.Lock()
	p.sessions.max = d
	p.sessions.mu.Unlock()
}

// serveLogout is the end-session endpoint reduced to its effect: POST (or GET) with
// id_token_hint, a token of the session (Keycloak wants the ID token; this stand-in takes any
// token it issued for the session), ends the session: 204. A hint that is not a valid token of
// this realm is 400 invalid_request.
func (p *IdP) serveLogout(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeError(w, http.StatusBadRequest, ErrInvalidRequest, "Invalid request")
		return
	}
	claims, err := p.verifyToken(r.Context(), r.Form.Get("id_token_hint"))
	sid, _ := claims["sid"].(string)
	if err != nil || sid == "" {
		writeError(w, http.StatusBadRequest, ErrInvalidRequest, DescInvalidIDTokenHint)
		return
	}
	p.sessions.end(func(id string, _ *session) bool { return id == sid })
	w.WriteHeader(http.StatusNoContent)
}
