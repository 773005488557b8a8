package host

import (
	"net"
	"strconv"
	"strings"
)

// property is Context::getProperty for the paths a plugin is likely to read. A path is
// NUL-separated segments; the first names a top-level value. Root contexts have no stream, so
// request.*, response.*, source.*, destination.* and xds.* are NotFound there. Anything not
// listed is NotFound too (Envoy knows many more, e.g. node.* and metadata).
func (v *vm) property(path string) ([]byte, uint32) {
	parts := strings.Split(path, "\x00")
	cfg := &v.h.cfg
	st := v.target()
	one := func(val string) ([]byte, uint32) {
		if len(parts) != 1 {
			return nil, statusNotFound
		}
		return []byte(val), statusOK
	}
	switch parts[0] {
	case "plugin_name":
		return one(v.rootOf(v.current).plugin.Name)
	case "plugin_root_id":
		return one(v.rootOf(v.current).plugin.RootID)
	case "plugin_vm_id":
		return one(cfg.VMID)
	}
	if st == nil {
		return nil, statusNotFound
	}
	field := ""
	if len(parts) > 1 {
		field = strings.Join(parts[1:], "\x00")
	}
	switch parts[0] {
	case "xds":
		switch {
		case cfg.UpstreamCluster == "":
			// no route matched: neither name exists
		case field == "cluster_name":
			return []byte(cfg.UpstreamCluster), statusOK
		case field == "route_name":
			return []byte(cfg.RouteName), statusOK
		}
	case "request":
		return st.requestProperty(field)
	case "response":
		if st.resp != nil {
			if field == "code" {
				code, _ := strconv.Atoi(headerOr(st.resp, ":status"))
				return le64(int64(code)), statusOK
			}
			if name, ok := strings.CutPrefix(field, "headers\x00"); ok {
				if val, ok := st.resp.get(name); ok {
					return []byte(val), statusOK
				}
			}
		}
	case "source", "destination":
		addr := st.remote
		if parts[0] == "destination" {
			addr = st.local
		}
		switch field {
		case "address":
			return []byte(addr), statusOK
		case "port":
			_, port, _ := net.SplitHostPort(addr)
			n, _ := strconv.Atoi(port)
			return le64(int64(n)), statusOK
		}
	default:
		// A value the plugin stored with proxy_set_property (filter state "wasm.<name>").
		if val, ok := st.props[parts[0]]; ok && len(parts) == 1 {
			return val, statusOK
		}
	}
	return nil, statusNotFound
}

func (st *stream) requestProperty(field string) ([]byte, uint32) {
	req := st.req
	path := headerOr(req, ":path")
	str := func(s string) ([]byte, uint32) { return []byte(s), statusOK }
	switch field {
	case "path":
		return str(path)
	case "url_path":
		p, _, _ := strings.Cut(path, "?")
		return str(p)
	case "query":
		_, q, _ := strings.Cut(path, "?")
		return str(q)
	case "host":
		return str(headerOr(req, ":authority"))
	case "scheme":
		return str(headerOr(req, ":scheme"))
	case "method":
		return str(headerOr(req, ":method"))
	case "protocol":
		return str(st.protocol)
	case "id":
		return str(headerOr(req, "x-request-id"))
	case "useragent":
		return str(headerOr(req, "user-agent"))
	case "referer":
		return str(headerOr(req, "referer"))
	case "time":
		return le64(st.start.UnixNano()), statusOK
	case "headers":
		return req.marshal(), statusOK
	}
	if name, ok := strings.CutPrefix(field, "headers\x00"); ok {
		if val, ok := req.get(name); ok {
			return str(val)
		}
	}
	return nil, statusNotFound
}

func headerOr(p pairs, key string) string {
	v, _ := p.get(key)
	return v
}
