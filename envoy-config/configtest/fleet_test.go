package configtest

import (
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	extensions "istio.io/api/extensions/v1alpha1"
	networking "istio.io/api/networking/v1"

	"github.com/kagenti/token-exchange-filter/filter/config"
)

// The front proxy hashes on the user token header with a consistent-hashing load balancer: a
// hash_policy under another balancer does nothing, and a hash on another header would spread
// each user over every gateway.
func TestFrontProxyHashesOnTheUserTokenHeader(t *testing.T) {
	bs, err := decodeBootstrap(readConfig(t, "front-proxy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var routeCluster, header string
	for _, l := range bs.GetStaticResources().GetListeners() {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				hcm := &hcmv3.HttpConnectionManager{}
				if err := f.GetTypedConfig().UnmarshalTo(hcm); err != nil {
					t.Fatal(err)
				}
				for _, vh := range hcm.GetRouteConfig().GetVirtualHosts() {
					for _, r := range vh.GetRoutes() {
						ra := r.GetRoute()
						routeCluster = ra.GetCluster()
						for _, hp := range ra.GetHashPolicy() {
							if h, ok := hp.GetPolicySpecifier().(*routev3.RouteAction_HashPolicy_Header_); ok {
								header = h.Header.GetHeaderName()
							}
						}
					}
				}
			}
		}
	}
	if header != config.DefaultUserTokenHeader {
		t.Errorf("hash_policy header %q, want the user token header %q", header, config.DefaultUserTokenHeader)
	}
	for _, c := range bs.GetStaticResources().GetClusters() {
		if c.GetName() != routeCluster {
			continue
		}
		if p := c.GetLbPolicy(); p != clusterv3.Cluster_MAGLEV && p != clusterv3.Cluster_RING_HASH {
			t.Errorf("cluster %s: lb_policy %v, want MAGLEV or RING_HASH (hash_policy needs one)", c.GetName(), p)
		}
		return
	}
	t.Errorf("the route's cluster %q is not defined", routeCluster)
}

// The Istio DestinationRule does the same for the gateway's Service.
func TestIstioDestinationRuleHashesOnTheUserTokenHeader(t *testing.T) {
	dr := &networking.DestinationRule{}
	drObj, err := decodeObject(readConfig(t, "istio/destinationrule-gateway-hash.yaml"), "DestinationRule",
		[]string{"networking.istio.io/v1"}, dr)
	if err != nil {
		t.Fatal(err)
	}
	ch := dr.GetTrafficPolicy().GetLoadBalancer().GetConsistentHash()
	if ch.GetHttpHeaderName() != config.DefaultUserTokenHeader {
		t.Errorf("consistentHash.httpHeaderName %q, want %q", ch.GetHttpHeaderName(), config.DefaultUserTokenHeader)
	}
	if ch.GetMaglev() == nil && ch.GetRingHash() == nil {
		t.Error("no maglev or ringHash: say which consistent hash")
	}
	wpObj, err := decodeObject(readIstioFiles(t).wasmPlugin, "WasmPlugin", []string{"extensions.istio.io/v1alpha1"}, &extensions.WasmPlugin{})
	if err != nil {
		t.Fatal(err)
	}
	if drObj.Metadata.Namespace != wpObj.Metadata.Namespace {
		t.Errorf("DestinationRule in namespace %q, the gateway (WasmPlugin) in %q", drObj.Metadata.Namespace, wpObj.Metadata.Namespace)
	}
}
