package testenv

import (
	"strings"
	"testing"
)

func TestRabbitTLS(t *testing.T) {
	raw := RabbitTLSURL(t)
	addr, err := hostPort(raw, map[string]string{"amqps": "5671"})
	if err != nil {
		t.Fatal(err)
	}
	good, err := caPool(TLSCAFile(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := amqpTLSGreeting(addr, good, probeTimeout); err != nil {
		t.Fatalf("AMQP over TLS with the test CA: %v", err)
	}
	other, err := caPool(OtherCAFile(t))
	if err != nil {
		t.Fatal(err)
	}
	err = amqpTLSGreeting(addr, other, probeTimeout)
	if err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Fatalf("TLS probe with an unrelated CA = %v, want an unknown authority error", err)
	}
	// The plain listener does not speak TLS.
	if err := amqpTLSGreeting(strings.Replace(addr, ":5671", ":5672", 1), good, probeTimeout); err == nil {
		t.Error("TLS probe accepted the plain AMQP port")
	}
}

func TestTLSCAFileMissingFails(t *testing.T) {
	t.Setenv(EnvTLSCA, t.TempDir()+"/absent.pem")
	f := &fakeTB{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		TLSCAFile(f)
	}()
	<-done
	if f.skipped || !strings.Contains(f.fatal, "scripts/brokers.sh up rabbitmq") {
		t.Fatalf("TLSCAFile with a missing file: skipped=%v fatal=%q, want a failure with the hint", f.skipped, f.fatal)
	}
}
