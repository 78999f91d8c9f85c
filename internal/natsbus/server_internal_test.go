package natsbus

// testUsers are the users of the package-internal tests' servers (the
// external ones use natsbustest, which these cannot import).
var testUsers = map[string]string{UserGust: "internal-test"}

// testConfig is how the package-internal tests connect: as UserGust,
// provisioning.
func testConfig(srv *Server, name string) ClientConfig {
	return ClientConfig{URL: srv.UserURL(UserGust), Name: name, Provision: true}
}
