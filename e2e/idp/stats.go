package idp

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// Request is a token request the IdP received (recorded before any fault applies).
type Request struct {
	Time  time.Time
	Grant string // grant_type
	// ClientID from the form or the Basic header; ClientAuth is "basic", "post" or "" (no secret).
	ClientID   string
	ClientAuth string
	Header     http.Header
	// Form as received (client_secret included).
	Form url.Values
	// SubjectToken and Subject ("sub" of the subject token, not verified) of a token exchange.
	SubjectToken string
	Subject      string
}

// Counts of token requests received, by grant.
type Counts struct {
	TokenExchange     int
	ClientCredentials int
	Password          int
	// Other grant types, or none.
	Other int
	// TokenExchangeBySubject counts token exchanges by the "sub" of their subject token.
	TokenExchangeBySubject map[string]int
}

// Total is the number of token requests.
func (c Counts) Total() int { return c.TokenExchange + c.ClientCredentials + c.Password + c.Other }

type stats struct {
	mu       sync.Mutex
	counts   Counts
	requests []Request
	changed  chan struct{}
}

func (s *stats) record(req Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch req.Grant {
	case GrantTokenExchange:
		s.counts.TokenExchange++
		if s.counts.TokenExchangeBySubject == nil {
			s.counts.TokenExchangeBySubject = map[string]int{}
		}
		s.counts.TokenExchangeBySubject[req.Subject]++
	case GrantClientCredentials:
		s.counts.ClientCredentials++
	case GrantPassword:
		s.counts.Password++
	default:
		s.counts.Other++
	}
	s.requests = append(s.requests, req)
	s.notifyLocked()
}

func (s *stats) notifyLocked() {
	if s.changed != nil {
		close(s.changed)
	}
	s.changed = make(chan struct{})
}

func (s *stats) snapshotLocked() Counts {
	c := s.counts
	c.TokenExchangeBySubject = maps.Clone(s.counts.TokenExchangeBySubject)
	if c.TokenExchangeBySubject == nil {
		c.TokenExchangeBySubject = map[string]int{}
	}
	return c
}

// Counts returns the numbers of token requests received so far.
func (p *IdP) Counts() Counts {
	p.stats.mu.Lock()
	defer p.stats.mu.Unlock()
	return p.stats.snapshotLocked()
}

// TokenExchangeCount is the number of token-exchange requests received.
func (p *IdP) TokenExchangeCount() int { return p.Counts().TokenExchange }

// ClientCredentialsCount is the number of client_credentials requests received.
func (p *IdP) ClientCredentialsCount() int { return p.Counts().ClientCredentials }

// TokenExchangeCountFor is the number of token-exchange requests whose subject token has the
// given "sub" (see Subject for a user's sub).
func (p *IdP) TokenExchangeCountFor(subject string) int {
	return p.Counts().TokenExchangeBySubject[subject]
}

// TokenExchangeCountForToken is the number of token-exchange requests with this subject_token.
func (p *IdP) TokenExchangeCountForToken(subjectToken string) int {
	p.stats.mu.Lock()
	defer p.stats.mu.Unlock()
	n := 0
	for _, r := range p.stats.requests {
		if r.Grant == GrantTokenExchange && r.SubjectToken == subjectToken {
			n++
		}
	}
	return n
}

// Requests returns the token requests received so far, oldest first.
func (p *IdP) Requests() []Request {
	p.stats.mu.Lock()
	defer p.stats.mu.Unlock()
	out := make([]Request, len(p.stats.requests))
	for i, r := range p.stats.requests {
		r.Header = r.Header.Clone()
		r.Form = url.Values(maps.Clone(map[string][]string(r.Form)))
		out[i] = r
	}
	return out
}

// ResetCounts forgets the counts and recorded requests.
func (p *IdP) ResetCounts() {
	p.stats.mu.Lock()
	defer p.stats.mu.Unlock()
	p.stats.counts = Counts{}
	p.stats.requests = nil
	p.stats.notifyLocked()
}

// WaitFor waits until cond holds for the counts (checked now and after every request), or ctx
// ends.
func (p *IdP) WaitFor(ctx context.Context, cond func(Counts) bool) error {
	for {
		p.stats.mu.Lock()
		c := p.stats.snapshotLocked()
		if p.stats.changed == nil {
			p.stats.changed = make(chan struct{})
		}
		ch := p.stats.changed
		p.stats.mu.Unlock()
		if cond(c) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("idp: condition not reached (counts: exchange %d, client_credentials %d, password %d, other %d): %w",
				c.TokenExchange, c.ClientCredentials, c.Password, c.Other, ctx.Err())
		}
	}
}

// WaitForTokenExchanges waits until at least n token-exchange requests have been received.
func (p *IdP) WaitForTokenExchanges(ctx context.Context, n int) error {
	return p.WaitFor(ctx, func(c Counts) bool { return c.TokenExchange >= n })
}

// WaitForTokenExchangesFor waits until at least n token-exchange requests with a subject token of
// this "sub" have been received.
func (p *IdP) WaitForTokenExchangesFor(ctx context.Context, subject string, n int) error {
	return p.WaitFor(ctx, func(c Counts) bool { return c.TokenExchangeBySubject[subject] >= n })
}

// WaitForClientCredentials waits until at least n client_credentials requests have been received.
func (p *IdP) WaitForClientCredentials(ctx context.Context, n int) error {
	return p.WaitFor(ctx, func(c Counts) bool { return c.ClientCredentials >= n })
}
