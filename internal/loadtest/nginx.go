package loadtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"text/template"
	"time"
)

// nginxConf is a plain reverse proxy with a keepalive upstream, as an
// operator would put in front of Fava. Keepalive request limits are raised
// on both sides so that nginx, like favaproxy, keeps its connections for the
// whole run; proxy_max_temp_file_size 0 keeps responses off the disk (the
// workers may run as another user than the temporary directory's owner).
var nginxConf = template.Must(template.New("nginx.conf").Parse(`# Written by favabench.
worker_processes auto;
error_log {{.Dir}}/error.log warn;
pid {{.Dir}}/nginx.pid;
events { worker_connections 1024; }
http {
	access_log off;
	client_body_temp_path {{.Dir}}/client_body;
	proxy_temp_path {{.Dir}}/proxy;
	fastcgi_temp_path {{.Dir}}/fastcgi;
	uwsgi_temp_path {{.Dir}}/uwsgi;
	scgi_temp_path {{.Dir}}/scgi;
	keepalive_requests 1000000;
	upstream fava {
		server {{.Upstream}};
		keepalive 64;
		keepalive_requests 1000000;
	}
	server {
		listen {{.Listen}};
		location / {
			proxy_pass http://fava;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_set_header Host $http_host;
			proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
			proxy_set_header X-Forwarded-Proto $scheme;
			proxy_max_temp_file_size 0;
		}
	}
}
`))

// nginxProc is a running nginx master (with its workers) in the foreground.
type nginxProc struct {
	cmd  *exec.Cmd
	addr string
	done chan struct{}
}

func (n *nginxProc) url() string { return "http://" + n.addr }

// startNginx writes a configuration under dir/nginx proxying to upstream
// (host:port), starts nginx in the foreground on a free loopback port and
// waits until it accepts connections.
func startNginx(ctx context.Context, bin, dir, upstream string) (*nginxProc, error) {
	d := filepath.Join(dir, "nginx")
	if err := os.MkdirAll(d, 0o755); err != nil {
		return nil, err
	}
	var lastErr error
	for range 3 { // a free port can be taken by someone else before nginx binds it
		addr, err := freePort()
		if err != nil {
			return nil, err
		}
		n, err := startNginxOn(ctx, bin, d, upstream, addr)
		if err == nil {
			return n, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

func startNginxOn(ctx context.Context, bin, d, upstream, addr string) (*nginxProc, error) {
	conf := filepath.Join(d, "nginx.conf")
	var sb strings.Builder
	if err := nginxConf.Execute(&sb, map[string]string{"Dir": d, "Upstream": upstream, "Listen": addr}); err != nil {
		return nil, err
	}
	if err := os.WriteFile(conf, []byte(sb.String()), 0o644); err != nil {
		return nil, err
	}
	errLog := filepath.Join(d, "error.log")
	cmd := exec.Command(bin, "-p", d+"/", "-c", conf, "-e", errLog, "-g", "daemon off;")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := os.Create(filepath.Join(d, "stderr.log"))
	if err != nil {
		return nil, err
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start nginx: %w", err)
	}
	n := &nginxProc{cmd: cmd, addr: addr, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(n.done)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return n, nil
		}
		select {
		case <-n.done:
			logs, _ := os.ReadFile(errLog)
			more, _ := os.ReadFile(filepath.Join(d, "stderr.log"))
			return nil, fmt.Errorf("nginx exited before listening:\n%s%s", logs, more)
		case <-ctx.Done():
			n.stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			n.stop()
			return nil, fmt.Errorf("nginx did not listen on %s within 10s", addr)
		}
	}
}

// stop asks nginx for a fast shutdown and kills its process group if it
// has not exited within 5 s.
func (n *nginxProc) stop() {
	select {
	case <-n.done:
		return
	default:
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
		<-n.done
	}
}

// freePort returns a loopback address whose port was free a moment ago.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
