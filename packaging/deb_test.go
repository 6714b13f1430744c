package packaging_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

const (
	pkgName   = "ldapgate"
	dataDir   = "/var/lib/ldapgate"
	conffile  = "/etc/ldapgate/ldapgate.yaml"
	debSource = "0.0.0-packagetest" // VERSION given to make deb
)

// `make deb` builds a package that dpkg installs on this machine: the
// binary answers --version and check-config (with the packaged conffile,
// against a real slapd), the man pages and the completion are where man and
// bash look, the service user and data folder exist; the administrator's
// edit of the conffile survives a reinstall; removal and purge keep the
// data folder (the journal) unless LDAPGATE_PURGE_DATA=yes. Only the first
// install runs dpkg's triggers (man-db's index) at once: they take seconds
// each, so the later steps defer them to one run at the end.
func TestDebianPackageInstallsAndPurgeKeepsTheJournal(t *testing.T) {
	t.Parallel()
	requireDpkg(t)
	userExisted := exec.Command("getent", "passwd", "ldapgate").Run() == nil
	deb := makeDeb(t)

	dpkg(t, "-i", deb)
	t.Cleanup(func() { cleanUpPackage(t, !userExisted) })

	if out := run(t, "ldapgate", "--version"); !strings.Contains(out, debSource) {
		t.Errorf("ldapgate --version printed %q; want the version %s", out, debSource)
	}
	for _, page := range []string{"ldapgate", "ldapgate-serve", "ldapgate-check-config", "ldapgate-journal"} {
		if out := run(t, "man", "-w", page); !strings.HasPrefix(out, "/usr/share/man/man1/"+page+".1") {
			t.Errorf("man -w %s = %q; want the packaged page", page, out)
		}
	}
	if out := run(t, "ldapgate", "check-config", "--help"); !strings.Contains(out, "--config") {
		t.Errorf("ldapgate check-config --help does not describe --config:\n%s", out)
	}
	// The installed bash completion asks the installed binary.
	out := run(t, "bash", "-c", `source /usr/share/bash-completion/completions/ldapgate
COMP_WORDS=(ldapgate check); COMP_CWORD=1; _ldapgate_complete; echo "${COMPREPLY[*]}"`)
	if out != "check-config" {
		t.Errorf("bash completion of `ldapgate check` offered %q; want check-config", out)
	}
	if _, err := os.Stat("/usr/share/zsh/vendor-completions/_ldapgate"); err != nil {
		t.Errorf("zsh completion: %v", err)
	}

	// The service's user reads the packaged configuration, which passes
	// check-config against a directory that answers (only the upstream
	// differs from the file's).
	dir := slapd.StartT(t, slapd.Options{})
	if out := run(t, "runuser", "-u", "ldapgate", "--", "ldapgate", "check-config", "--config", conffile, "--upstream", dir.URL); !strings.Contains(out, "ok    upstream "+dir.URL) {
		t.Errorf("check-config with %s does not report the upstream answering:\n%s", conffile, out)
	}

	// The unit's directives are ones this systemd knows.
	if _, err := exec.LookPath("systemd-analyze"); err == nil {
		run(t, "systemd-analyze", "verify", "/usr/lib/systemd/system/ldapgate.service")
	}

	// The user, the data folder and the conffile as postinst leaves them.
	run(t, "getent", "passwd", "ldapgate")
	if owner := run(t, "stat", "-c", "%U:%G %a", dataDir); owner != "ldapgate:ldapgate 700" {
		t.Errorf("%s is %s; want ldapgate:ldapgate 700", dataDir, owner)
	}
	if mode := run(t, "stat", "-c", "%U:%G %a", conffile); mode != "root:ldapgate 640" {
		t.Errorf("%s is %s; want root:ldapgate 640", conffile, mode)
	}
	if conf := run(t, "dpkg-query", "-W", "-f=${Conffiles}", pkgName); !strings.Contains(conf, conffile) {
		t.Errorf("%s is not a conffile; the package's conffiles: %q", conffile, conf)
	}

	// The administrator's edit survives a reinstall.
	edited := append(readFile(t, conffile), []byte("# edited by the administrator\n")...)
	writeFile(t, conffile, edited)
	dpkg(t, "-i", "--no-triggers", deb)
	if got := readFile(t, conffile); !bytes.Equal(got, edited) {
		t.Errorf("reinstalling replaced the administrator's %s", conffile)
	}

	// Remove, then purge: the journal stays.
	journal := filepath.Join(dataDir, "journal", "MANIFEST")
	writeFile(t, journal, []byte("stands for the journal"))
	dpkg(t, "-r", "--no-triggers", pkgName)
	if _, err := os.Stat("/usr/bin/ldapgate"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("/usr/bin/ldapgate after dpkg -r: %v", err)
	}
	if _, err := os.Stat(conffile); err != nil {
		t.Errorf("dpkg -r removed the conffile: %v", err)
	}
	out = dpkg(t, "--purge", "--no-triggers", pkgName)
	if _, err := os.Stat(conffile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s after purge: %v", conffile, err)
	}
	if _, err := os.Stat(journal); err != nil {
		t.Fatalf("purge removed the journal without LDAPGATE_PURGE_DATA=yes: %v\n%s", err, out)
	}
	if !strings.Contains(out, "kept "+dataDir) {
		t.Errorf("purge did not say it kept %s:\n%s", dataDir, out)
	}

	// Asked explicitly, purge removes it.
	dpkg(t, "-i", "--no-triggers", deb)
	dpkgEnv(t, []string{"LDAPGATE_PURGE_DATA=yes"}, "--purge", "--no-triggers", pkgName)
	if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s after a purge with LDAPGATE_PURGE_DATA=yes: %v", dataDir, err)
	}
}

// requireDpkg skips where dpkg cannot install packages, and where this
// machine already has ldapgate installed or data in its data folder: the
// test must not remove an administrator's gateway.
func requireDpkg(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("installing a package needs root")
	}
	for _, tool := range []string{"dpkg", "dpkg-query"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed: not a Debian machine", tool)
		}
	}
	for _, tool := range []string{"make", "man"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (make packaging-deps installs man-db)", tool)
		}
	}
	if out, _ := exec.Command("dpkg-query", "-W", "-f=${Status}", pkgName).Output(); len(out) > 0 && !strings.HasSuffix(string(out), "not-installed") {
		t.Skipf("the %s package is installed on this machine (%s); not touching it", pkgName, out)
	}
	if _, err := os.Stat(dataDir); err == nil {
		t.Skipf("%s exists on this machine; not touching it", dataDir)
	}
}

// makeDeb runs `make deb` into a temporary folder and returns the package.
// Until the Makefile includes packaging.mk, the fragment runs alone.
func makeDeb(t *testing.T) string {
	t.Helper()
	root := moduleRoot(t)
	out := t.TempDir()
	args := []string{"deb", "VERSION=" + debSource, "DEB_DIR=" + out}
	if mk, err := os.ReadFile(filepath.Join(root, "Makefile")); err != nil || !bytes.Contains(mk, []byte("packaging/packaging.mk")) {
		args = append([]string{"-f", "packaging/packaging.mk"}, args...)
	}
	cmd := exec.Command("make", args...)
	cmd.Dir = root
	if text, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make %s: %v\n%s", strings.Join(args, " "), err, text)
	}
	debs, err := filepath.Glob(filepath.Join(out, "ldapgate_*.deb"))
	if err != nil || len(debs) != 1 {
		t.Fatalf("make deb left %v in %s (%v); want one ldapgate_*.deb", debs, out, err)
	}
	if want := "ldapgate_0.0.0+packagetest_"; !strings.HasPrefix(filepath.Base(debs[0]), want) {
		t.Errorf("package file %s; want %s<arch>.deb", filepath.Base(debs[0]), want)
	}
	return debs[0]
}

func dpkg(t *testing.T, args ...string) string {
	t.Helper()
	return dpkgEnv(t, nil, args...)
}

// dpkgEnv runs dpkg, waiting while another dpkg or apt holds its lock.
func dpkgEnv(t *testing.T, env []string, args ...string) string {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		cmd := exec.Command("dpkg", args...)
		cmd.Env = append(withoutLDAPGateEnv(os.Environ()), env...)
		out, err := cmd.CombinedOutput()
		if err == nil {
			return string(out)
		}
		if !bytes.Contains(out, []byte("lock")) || time.Now().After(deadline) {
			t.Fatalf("dpkg %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		time.Sleep(time.Second) // polling interval for dpkg's lock
	}
}

// cleanUpPackage leaves the machine as the test found it: no package, no
// data folder, and no service user unless there was one before.
func cleanUpPackage(t *testing.T, removeUser bool) {
	if out, _ := exec.Command("dpkg-query", "-W", "-f=${Status}", pkgName).Output(); len(out) > 0 && !strings.HasSuffix(string(out), "not-installed") {
		if out, err := exec.Command("dpkg", "--purge", pkgName).CombinedOutput(); err != nil {
			t.Errorf("clean-up: dpkg --purge: %v\n%s", err, out)
		}
	}
	if out, err := exec.Command("dpkg", "--triggers-only", "--pending").CombinedOutput(); err != nil {
		t.Errorf("clean-up: dpkg --triggers-only --pending: %v\n%s", err, out)
	}
	if err := os.RemoveAll(dataDir); err != nil {
		t.Errorf("clean-up: %v", err)
	}
	if !removeUser {
		return
	}
	for _, cmd := range [][]string{{"deluser", "--system", "--quiet", "ldapgate"}, {"delgroup", "--system", "--quiet", "ldapgate"}} {
		_ = exec.Command(cmd[0], cmd[1:]...).Run()
	}
}

// run runs a command that must succeed and returns its trimmed output.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = withoutLDAPGateEnv(os.Environ())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
