package coord

// A local reply is the filter answering the client itself. Bodies are constant strings: nothing
// from the request or the IdP is echoed, so no token can leak through them.
type localReply struct {
	status          uint32
	body            string
	wwwAuthenticate string
}

var (
	replyTokenMissing = localReply{
		status:          401,
		body:            `{"error":"invalid_token","error_description":"a user token is required"}`,
		wwwAuthenticate: `Bearer`,
	}
	replyTokenRejected = localReply{
		status:          401,
		body:            `{"error":"invalid_token","error_description":"the user token was rejected"}`,
		wwwAuthenticate: `Bearer error="invalid_token"`,
	}
	replyExchangeFailed = localReply{
		status: 502,
		body:   `{"error":"token_exchange_failed","error_description":"the identity provider did not exchange the user token"}`,
	}
	replyBusy = localReply{
		status: 503,
		body:   `{"error":"temporarily_unavailable","error_description":"too many new user tokens, try again shortly"}`,
	}
	replyNoToken = localReply{
		status: 503,
		body:   `{"error":"temporarily_unavailable","error_description":"no service-account token is available"}`,
	}
)

func (r localReply) send(w *Worker) {
	headers := [][2]string{
		{"content-type", "application/json"},
		{"cache-control", "no-store"},
	}
	if r.wwwAuthenticate != "" {
		headers = append(headers, [2]string{"www-authenticate", r.wwwAuthenticate})
	}
	if err := w.host.SendReply(r.status, headers, []byte(r.body)); err != nil {
		w.logError("sending the local reply failed: " + err.Error())
	}
	switch r.status {
	case 401:
		w.count(Reply401)
	case 502:
		w.count(Reply502)
	case 503:
		w.count(Reply503)
	}
}
