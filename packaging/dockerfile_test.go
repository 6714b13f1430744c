package packaging_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The Dockerfile builds the binary with the command `make deb` runs (the
// image is not built here: there is no container engine).
func TestDockerfileBuildsLikeMakeDeb(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed")
	}
	const version = "9.8.7-test"
	root := moduleRoot(t)
	cmd := exec.Command("make", "-n", "-f", "packaging/packaging.mk", "ship-binary", "VERSION="+version, "DEB_DIR=out")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make -n ship-binary: %v\n%s", err, out)
	}
	var makeBuild string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, " build ") {
			makeBuild = line
		}
	}
	docker, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	// The RUN instruction holding `go build`, its continuation lines joined.
	joined := strings.ReplaceAll(string(docker), "\\\n", " ")
	var dockerBuild string
	for _, line := range strings.Split(joined, "\n") {
		if strings.HasPrefix(line, "RUN ") && strings.Contains(line, " build ") {
			dockerBuild = strings.ReplaceAll(strings.TrimPrefix(line, "RUN "), "${VERSION}", version)
		}
	}
	if makeBuild == "" || dockerBuild == "" {
		t.Fatalf("no go build found: make prints %q, the Dockerfile has %q", out, dockerBuild)
	}
	if got, want := buildCommand(dockerBuild), buildCommand(makeBuild); got != want {
		t.Errorf("the Dockerfile builds with\n  %s\n`make deb` with\n  %s", got, want)
	}
}

var (
	outputFlag = regexp.MustCompile(`-o \S+`)
	afterBuild = regexp.MustCompile(`\s*&&.*$`)
)

// buildCommand is a go build command line without its output file, its
// quoting or what follows it in the same shell line.
func buildCommand(line string) string {
	line = afterBuild.ReplaceAllString(line, "")
	line = outputFlag.ReplaceAllString(line, "")
	line = strings.NewReplacer(`"`, "", `'`, "").Replace(line)
	return strings.Join(strings.Fields(line), " ")
}
