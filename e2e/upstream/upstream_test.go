package upstream

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func start(t *testing.T) *Upstream {
	t.Helper()
	u, err := Start("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return u
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// fakeJWT is an unsigned JWT with the given claims (the echo does not verify).
func fakeJWT(claims map[string]any) string {
	h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256","typ":"JWT"}`))
	b, _ := json.Marshal(claims)
	return h + "." + base64.RawURLEncoding.EncodeToString(b) + ".c2ln"
}

func do(t *testing.T, req *http.Request) (*http.Response, Echo) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e Echo
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		t.Fatalf("echo is not JSON: %v", err)
	}
	return resp, e
}

func TestEchoHeadersClaimsAndBody(t *testing.T) {
	u := start(t)
	token := fakeJWT(map[string]any{"sub": "alice-id", "azp": "token-exchange-filter", "aud": []string{"kagenti-api"}})
	req, _ := http.NewRequest(http.MethodPost, u.URL()+"/api/v1/things?x=1", strings.NewReader(`{"hello":"world"}`))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("X-Backstage-User", "alice")
	req.Header.Add("X-Multi", "a")
	req.Header.Add("X-Multi", "b")
	resp, e := do(t, req)

	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, content-type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if e.Method != "POST" || e.Path != "/api/v1/things" || e.Query != "x=1" || e.Host != u.Addr() {
		t.Errorf("echo = %+v", e)
	}
	if got := e.Headers["authorization"]; len(got) != 1 || got[0] != "Bearer "+token {
		t.Errorf("authorization = %v", got)
	}
	if got := e.Headers["x-backstage-user"]; len(got) != 1 || got[0] != "alice" {
		t.Errorf("x-backstage-user = %v", got)
	}
	if got := e.Headers["x-multi"]; len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Errorf("x-multi = %v", got)
	}
	if e.Claims["sub"] != "alice-id" || e.Claims["azp"] != "token-exchange-filter" {
		t.Errorf("claims = %v", e.Claims)
	}
	if e.Body == nil || *e.Body != `{"hello":"world"}` || e.BodySize != 17 {
		t.Errorf("body = %v, size %d", e.Body, e.BodySize)
	}

	if err := u.WaitForRequests(ctxT(t), 1); err != nil {
		t.Fatal(err)
	}
	r, ok := u.LastRequest()
	if !ok || r.BearerToken != token || r.Claims["sub"] != "alice-id" || r.Header.Get("X-Backstage-User") != "alice" ||
		string(r.Body) != `{"hello":"world"}` || r.Status != 200 || r.Path != "/api/v1/things" {
		t.Errorf("recorded %+v", r)
	}
}

func TestEchoWithoutBearerHasNullClaims(t *testing.T) {
	u := start(t)
	for _, auth := range []string{"", "Basic dXNlcjpwYXNz", "Bearer not-a-jwt"} {
		req, _ := http.NewRequest(http.MethodGet, u.URL()+"/", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		if v, present := m["claims"]; !present || v != nil {
			t.Errorf("authorization %q: claims = %v (present %v), want null", auth, v, present)
		}
	}
}

func TestLargeBodyIsHashedNotEchoed(t *testing.T) {
	u := start(t)
	big := strings.Repeat("x", MaxEchoBody+1)
	req, _ := http.NewRequest(http.MethodPut, u.URL()+"/upload", strings.NewReader(big))
	_, e := do(t, req)
	sum := sha256.Sum256([]byte(big))
	if e.Body != nil || e.BodySize != int64(len(big)) || e.BodySHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("body present %v, size %d, sha %s", e.Body != nil, e.BodySize, e.BodySHA256)
	}
}

func TestStatusHeaderAndRejectedTokens(t *testing.T) {
	u := start(t)
	send := func(token, status string) *http.Response {
		req, _ := http.NewRequest(http.MethodGet, u.URL()+"/x", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if status != "" {
			req.Header.Set(HeaderStatus, status)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	if got := send("", "401").StatusCode; got != 401 {
		t.Errorf("x-echo-status 401: got %d", got)
	}
	if got := send("", "503").StatusCode; got != 503 {
		t.Errorf("x-echo-status 503: got %d", got)
	}

	bad := fakeJWT(map[string]any{"sub": "a", "jti": "1"})
	good := fakeJWT(map[string]any{"sub": "a", "jti": "2"})
	u.Reject("Bearer " + bad)
	resp := send(bad, "")
	if resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "invalid_token") {
		t.Errorf("rejected token: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	if got := send(good, "").StatusCode; got != 200 {
		t.Errorf("other token: got %d", got)
	}
	u.Unreject(bad)
	if got := send(bad, "").StatusCode; got != 200 {
		t.Errorf("unrejected token: got %d", got)
	}
	reqs := u.Requests()
	if len(reqs) != 5 || reqs[2].Status != 401 || reqs[3].Status != 200 {
		t.Errorf("recorded statuses: %v", statuses(reqs))
	}
}

func statuses(reqs []Request) []int {
	var out []int
	for _, r := range reqs {
		out = append(out, r.Status)
	}
	return out
}

func TestVerifier(t *testing.T) {
	u := start(t)
	u.SetVerifier(func(tok string) (map[string]any, error) {
		if strings.HasSuffix(tok, ".c2ln") {
			return nil, errors.New("bad signature")
		}
		return map[string]any{}, nil
	})
	req, _ := http.NewRequest(http.MethodGet, u.URL()+"/", nil)
	req.Header.Set("Authorization", "Bearer "+fakeJWT(map[string]any{"sub": "x"}))
	resp, e := do(t, req)
	if resp.StatusCode != 200 || e.Verified == nil || *e.Verified || e.VerifyError != "bad signature" {
		t.Errorf("status %d verified %v error %q", resp.StatusCode, e.Verified, e.VerifyError)
	}
}

func TestDelayHeader(t *testing.T) {
	u := start(t)
	req, _ := http.NewRequest(http.MethodGet, u.URL()+"/", nil)
	req.Header.Set(HeaderDelay, "150ms")
	begin := time.Now()
	resp, _ := do(t, req)
	if resp.StatusCode != 200 || time.Since(begin) < 150*time.Millisecond {
		t.Errorf("status %d after %v", resp.StatusCode, time.Since(begin))
	}
}

// readEvent reads one server-sent event (up to its blank line) and returns its data.
func readEvent(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	var data string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading event: %v", err)
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			return data
		}
		if v, ok := strings.CutPrefix(line, "data: "); ok {
			data = v
		}
	}
}

func TestSSEArrivesIncrementally(t *testing.T) {
	u := start(t)
	// hold=1: the upstream sends event 1, then waits for ReleaseStreams. Reading event 1 before
	// the release proves each event is flushed on its own.
	resp, err := http.Get(u.URL() + "/sse?events=3&interval=10ms&hold=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d content-type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	br := bufio.NewReader(resp.Body)
	if got := readEvent(t, br); got != "event 1" {
		t.Fatalf("first event %q", got)
	}
	if r, _ := u.LastRequest(); len(r.EventTimes) != 1 {
		t.Fatalf("upstream sent %d events while held, want 1", len(r.EventTimes))
	}
	u.ReleaseStreams()
	for i := 2; i <= 3; i++ {
		if got, want := readEvent(t, br), "event "+string(rune('0'+i)); got != want {
			t.Fatalf("event %d = %q", i, got)
		}
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("stream did not end: %v", err)
	}
}

func TestSSEUnheldStreamsEveryEvent(t *testing.T) {
	u := start(t)
	resp, err := http.Get(u.URL() + "/sse?events=4&interval=20ms")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	first := readEvent(t, br)
	firstAt := time.Now()
	for i := 2; i <= 4; i++ {
		readEvent(t, br)
	}
	r, _ := u.LastRequest()
	if first != "event 1" || len(r.EventTimes) != 4 {
		t.Fatalf("first %q, %d events sent", first, len(r.EventTimes))
	}
	// The first event was read before the last one was sent.
	if !firstAt.Before(r.EventTimes[3]) {
		t.Errorf("first event read at %v, last sent at %v", firstAt, r.EventTimes[3])
	}
}

func TestH2CPriorKnowledge(t *testing.T) {
	u := start(t)
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	client := &http.Client{Transport: &http.Transport{Protocols: &protocols}}
	resp, err := client.Get(u.URL() + "/h2")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 {
		t.Errorf("proto %s status %d", resp.Proto, resp.StatusCode)
	}
}

func TestNonLoopbackRefused(t *testing.T) {
	if _, err := Start("0.0.0.0:0"); err == nil {
		t.Fatal("listening on 0.0.0.0 was allowed")
	}
}
