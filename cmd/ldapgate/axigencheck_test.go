package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ldapgate/ldapgate/integration/axigensim"
)

// startCheckedSim starts a simulator with one domain and returns the
// settings that reach it.
func startCheckedSim(t *testing.T, accounts ...string) (*axigensim.Server, AxigenConfig) {
	t.Helper()
	sim := axigensim.New(axigensim.Options{Admins: map[string]string{"admin": "pw"}, Domains: []string{"example.com"}})
	if err := sim.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	for _, a := range accounts {
		sim.PutAccount("example.com", axigensim.AccountState{Name: a, Contact: map[string]string{"firstName": "Post"}})
	}
	pw := filepath.Join(t.TempDir(), "axigen.pw")
	if err := os.WriteFile(pw, []byte("pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return sim, AxigenConfig{Addr: sim.Addr(), User: "admin", PasswordFile: pw, Domain: "example.com"}
}

// TestAxigenCheckUnderstandsTheSimulator: every read command's answer is
// understood, and the check changes nothing.
func TestAxigenCheckUnderstandsTheSimulator(t *testing.T) {
	sim, ac := startCheckedSim(t, "postmaster", "john")
	sim.PutGroup("example.com", axigensim.GroupState{Name: "team", Members: []string{"john@example.com"}})
	var out bytes.Buffer
	if err := axigenCheck(t.Context(), ac, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{
		"ok    LIST Accounts: 2 accounts, postmaster among them",
		"ok    LIST Groups: 1 groups",
		"ok    SHOW RegistryInformation:",
		"ok    SHOW: ",
		`ok    LIST Addresses: 1 addresses in group "team"`,
		"all 9 answers understood",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	for _, tr := range sim.Transcripts() {
		for _, c := range tr.Commands() {
			if verb, _, _ := strings.Cut(strings.ToUpper(c), " "); verb != "USER" && verb != "LIST" && verb != "SHOW" &&
				verb != "UPDATE" && verb != "CONFIG" && verb != "BACK" && verb != "EXIT" && c != "pw" {
				t.Errorf("the check sent %q", c)
			}
		}
	}
}

// TestAxigenCheckShowsWhatItMisread: a listing without postmaster, which
// every real domain has, is reported with the raw answer and a failure.
func TestAxigenCheckShowsWhatItMisread(t *testing.T) {
	_, ac := startCheckedSim(t, "john")
	var out bytes.Buffer
	err := axigenCheck(t.Context(), ac, &out)
	if err == nil {
		t.Fatalf("no failure:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "FAIL  LIST Accounts: 1 names read, but not postmaster") ||
		!strings.Contains(out.String(), "      | The list of accounts:") {
		t.Errorf("output:\n%s", out.String())
	}
}

// TestAxigenCheckReportsARefusedStep: a command Axigen refuses on the way
// (entering postmaster) is a failure of its own, not a shorter success.
func TestAxigenCheckReportsARefusedStep(t *testing.T) {
	sim, ac := startCheckedSim(t, "postmaster")
	sim.FailMatching(regexp.MustCompile(`^UPDATE Account`), "Permission denied")
	var out bytes.Buffer
	if err := axigenCheck(t.Context(), ac, &out); err == nil {
		t.Fatalf("no failure:\n%s", out.String())
	}
	if !strings.Contains(out.String(), `FAIL  UPDATE Account name "postmaster":`) {
		t.Errorf("output:\n%s", out.String())
	}
}
