"""installer/installer.sh staged with --root into a temporary directory: the files it writes, their modes
and contents, a second run that changes nothing, --uninstall, and the checks of its flags."""

import hashlib
import ipaddress
import os
import pty
import re
import select
import socket
import stat
import time

import pytest

from deploytest import BUILD, INSTALLER, LBD, PREFIX, WEBD, run

SECRET = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY01"
KEY_ID = "AKIAIOSFODNN7EXAMPLE"
# The environment the installer reads credentials from; the tests start it without them.
AWS_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")

LB_ARGS = ["--role", "lb", "--provider", "ec2", "--region", "eu-west-3",
           "--access-key-id", KEY_ID, "--secret-access-key", SECRET,
           "--endpoint", "http://127.0.0.1:5000", "--desired", "4",
           "--subnet", "subnet-0123456789abcdef0", "--security-groups", "sg-0123456789abcdef0,sg-11111111",
           "--image", "ami-0123456789abcdef0", "--instance-type", "t3.small", "--key-name", "ops-key",
           "--networks", "127.0.0.0/8,198.18.0.0/16", "--upstream", "127.0.1.20:8080",
           "--tag", "lbd:pool=test", "--listen", "127.0.0.1:8000", "--admin", "127.0.0.1:9181"]


def installer(root, *args, env=None, stdin_text=""):
    full_env = dict(os.environ)
    full_env["LBD_BUILD_DIR"] = BUILD
    full_env.pop("LBD_SOURCE_URL", None)
    for name in AWS_ENV:
        full_env.pop(name, None)
    full_env.update(env or {})
    return run([INSTALLER, "--root", str(root), "--non-interactive", "--no-packages",
                "--prefix", PREFIX, *args], env=full_env, input=stdin_text)


def install_ok(root, *args, env=None):
    r = installer(root, *args, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert SECRET not in r.stdout + r.stderr
    return r


def staged(root, path):
    return os.path.join(str(root), path.lstrip("/"))


def mode(root, path):
    return stat.S_IMODE(os.stat(staged(root, path)).st_mode)


def read(root, path):
    with open(staged(root, path), encoding="utf-8") as f:
        return f.read()


def ini(text):
    """{(section, key): value} of an INI text."""
    out, section = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out[(section, key.strip())] = value.strip()
    return out


def snapshot(root):
    """Every file with its mode, mtime and content hash; directories with their mode."""
    snap = {}
    for dirpath, dirnames, filenames in os.walk(str(root)):
        for name in dirnames:
            p = os.path.join(dirpath, name)
            snap[os.path.relpath(p, str(root))] = ("dir", stat.S_IMODE(os.lstat(p).st_mode))
        for name in filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            with open(p, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            snap[os.path.relpath(p, str(root))] = (stat.S_IMODE(st.st_mode), st.st_mtime_ns, digest)
    return snap


def bin_paths():
    return [f"{PREFIX}/sbin/lbd", f"{PREFIX}/sbin/webd", f"{PREFIX}/bin/lbctl", f"{PREFIX}/bin/webctl"]


@pytest.fixture(scope="module")
def lb_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("lb")
    r = install_ok(root, *LB_ARGS)
    return root, r


def test_lb_files(lb_root):
    root, r = lb_root
    for path in bin_paths():
        assert mode(root, path) == 0o755, path
    assert mode(root, "/etc/lbd") == 0o750
    assert mode(root, "/etc/lbd/lbd.conf") == 0o640
    assert mode(root, "/etc/lbd/credentials") == 0o600
    assert mode(root, "/etc/lbd/backend-user-data.sh") == 0o640
    assert mode(root, "/etc/systemd/system/lbd.service") == 0o644
    assert not os.path.exists(staged(root, "/etc/webd"))
    assert not os.path.exists(staged(root, "/etc/systemd/system/webd.service"))


def test_lb_config(lb_root):
    root, _ = lb_root
    conf = ini(read(root, "/etc/lbd/lbd.conf"))
    expected = {
        ("lbd", "listen"): "127.0.0.1:8000",
        ("lbd", "admin"): "127.0.0.1:9181",
        ("pool", "provider"): "ec2",
        ("pool", "desired"): "4",
        ("pool", "networks"): "127.0.0.0/8,198.18.0.0/16",
        ("ec2", "region"): "eu-west-3",
        ("ec2", "endpoint"): "http://127.0.0.1:5000",
        ("ec2", "image"): "ami-0123456789abcdef0",
        ("ec2", "instance_type"): "t3.small",
        ("ec2", "subnet"): "subnet-0123456789abcdef0",
        ("ec2", "security_groups"): "sg-0123456789abcdef0,sg-11111111",
        ("ec2", "key_name"): "ops-key",
        ("ec2", "upstream"): "127.0.1.20:8080",
        ("ec2", "tag"): "lbd:pool=test",
        ("ec2", "user_data"): "/etc/lbd/backend-user-data.sh",
        ("ec2", "credentials_file"): "/etc/lbd/credentials",
        # lbd.service's StateDirectory: a refresh's rollback survives a restart of lbd.
        ("ec2", "previous_settings"): "/var/lib/lbd/previous-launch-settings",
        ("limits", "max_body_size"): "1m",
    }
    for key, value in expected.items():
        assert conf.get(key) == value, (key, conf)
    text = read(root, "/etc/lbd/lbd.conf")
    assert SECRET not in text and KEY_ID not in text
    # The daemon itself accepts it.
    r = run([LBD, "--config", staged(root, "/etc/lbd/lbd.conf"), "--check-config"])
    assert r.returncode == 0, r.stdout + r.stderr


def test_lb_credentials(lb_root):
    root, _ = lb_root
    creds = ini(read(root, "/etc/lbd/credentials"))
    assert creds[("default", "aws_access_key_id")] == KEY_ID
    assert creds[("default", "aws_secret_access_key")] == SECRET


def test_lb_user_data(lb_root):
    root, _ = lb_root
    text = read(root, "/etc/lbd/backend-user-data.sh")
    assert text.startswith("#!/bin/bash\n")
    assert "\nUPSTREAM={{upstream}}\n" in text
    assert re.search(r"^LBD_SOURCE_URL=''$", text, re.M)
    assert len(text.encode()) < 16384  # EC2's user-data limit


def test_lb_unit_prefix(lb_root):
    root, _ = lb_root
    text = read(root, "/etc/systemd/system/lbd.service")
    assert f"ExecStart={PREFIX}/sbin/lbd --config /etc/lbd/lbd.conf" in text
    assert "Type=notify" in text


def test_lb_second_run_changes_nothing(lb_root):
    root, _ = lb_root
    before = snapshot(root)
    r = install_ok(root, *LB_ARGS)
    assert "wrote" not in r.stdout, r.stdout
    after = snapshot(root)
    assert before == after


def test_lb_changed_flag_rewrites(tmp_path):
    install_ok(tmp_path, *LB_ARGS)
    args = list(LB_ARGS)
    args[args.index("--desired") + 1] = "2"
    install_ok(tmp_path, *args)
    assert ini(read(tmp_path, "/etc/lbd/lbd.conf"))[("pool", "desired")] == "2"


def test_source_url_written(tmp_path):
    url = "https://example.org/lbd/lbd-0.1.0.tar.gz"
    install_ok(tmp_path, *LB_ARGS, env={"LBD_SOURCE_URL": url})
    text = read(tmp_path, "/etc/lbd/backend-user-data.sh")
    assert f"\nLBD_SOURCE_URL='{url}'\n" in text
    r = installer(tmp_path, *LB_ARGS, env={"LBD_SOURCE_URL": "https://x/'; rm -rf /"})
    assert r.returncode != 0


def test_instance_role_writes_no_credentials(tmp_path):
    args = [a for a in LB_ARGS]
    for flag in ("--access-key-id", "--secret-access-key"):
        i = args.index(flag)
        del args[i:i + 2]
    install_ok(tmp_path, *args, "--instance-role")
    conf = ini(read(tmp_path, "/etc/lbd/lbd.conf"))
    assert ("ec2", "credentials_file") not in conf
    assert not os.path.exists(staged(tmp_path, "/etc/lbd/credentials"))


def test_backend(tmp_path):
    install_ok(tmp_path, "--role", "backend", "--upstream", "127.0.1.20:8080")
    assert mode(tmp_path, "/etc/lbd/relay.conf") == 0o640
    conf = ini(read(tmp_path, "/etc/lbd/relay.conf"))
    assert conf[("pool", "provider")] == "static"
    assert conf[("pool", "backends")] == "127.0.1.20:8080"
    assert conf[("lbd", "listen")] == "0.0.0.0:80"
    assert conf[("limits", "max_body_size")] == "1m"
    assert os.path.exists(staged(tmp_path, "/etc/systemd/system/lbd-relay.service"))
    assert not os.path.exists(staged(tmp_path, "/etc/lbd/lbd.conf"))
    r = run([LBD, "--config", staged(tmp_path, "/etc/lbd/relay.conf"), "--check-config"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert conf[("lbd", "admin")] == "127.0.0.1:9180"


def test_backend_listen_and_admin(tmp_path):
    # Relays sharing one host's network (the boot world's instances) each listen on their own address.
    install_ok(tmp_path, "--role", "backend", "--upstream", "127.0.1.20:8080", "--listen", "127.0.1.5:80",
               "--admin", "127.0.1.5:9180")
    conf = ini(read(tmp_path, "/etc/lbd/relay.conf"))
    assert conf[("lbd", "listen")] == "127.0.1.5:80"
    assert conf[("lbd", "admin")] == "127.0.1.5:9180"
    r = run([LBD, "--config", staged(tmp_path, "/etc/lbd/relay.conf"), "--check-config"])
    assert r.returncode == 0, r.stdout + r.stderr


def test_web_local_database(tmp_path):
    install_ok(tmp_path, "--role", "web")
    assert mode(tmp_path, "/etc/webd") == 0o750
    assert mode(tmp_path, "/etc/webd/webd.conf") == 0o640
    assert mode(tmp_path, "/etc/webd/pgpass") == 0o600
    conf = ini(read(tmp_path, "/etc/webd/webd.conf"))
    assert conf[("webd", "listen")] == "0.0.0.0:8080"
    assert "passfile=/etc/webd/pgpass" in conf[("webd", "database")]
    assert "dbname=webd" in conf[("webd", "database")]
    pgpass = [line for line in read(tmp_path, "/etc/webd/pgpass").splitlines()
              if line and not line.startswith("#")]
    assert len(pgpass) == 1
    password = pgpass[0].split(":")[-1]
    assert re.fullmatch(r"[0-9a-f]{32,}", password)
    assert password not in read(tmp_path, "/etc/webd/webd.conf")
    r = run([WEBD, "--config", staged(tmp_path, "/etc/webd/webd.conf"), "--check-config"],
            env={k: v for k, v in os.environ.items() if k != "WEBD_DATABASE"})
    assert r.returncode == 0, r.stdout + r.stderr
    # A second run keeps the generated password and changes nothing.
    before = snapshot(tmp_path)
    install_ok(tmp_path, "--role", "web")
    assert snapshot(tmp_path) == before
    assert os.path.exists(staged(tmp_path, "/etc/systemd/system/webd.service"))


def test_web_given_database(tmp_path):
    conninfo = "host=127.0.0.1 port=5432 dbname=app user=app password=s3cret"
    r = install_ok(tmp_path, "--role", "web", "--listen", "127.0.0.1:8081", "--database", conninfo)
    assert "s3cret" not in r.stdout + r.stderr
    conf = ini(read(tmp_path, "/etc/webd/webd.conf"))
    assert conf[("webd", "database")] == conninfo
    assert conf[("webd", "listen")] == "127.0.0.1:8081"
    assert not os.path.exists(staged(tmp_path, "/etc/webd/pgpass"))


def this_machines_subnets():
    """The subnets of this machine's global IPv4 addresses, as `ip` reports them."""
    out = run(["ip", "-o", "-4", "addr", "show", "scope", "global"]).stdout
    nets = []
    for line in out.splitlines():
        iface = ipaddress.ip_interface(line.split()[3])
        if iface.network.prefixlen >= 8:
            nets.append(str(iface.network))
    return nets


def test_web_trusted_proxies(tmp_path):
    install_ok(tmp_path, "--role", "web")
    conf = ini(read(tmp_path, "/etc/webd/webd.conf"))
    assert conf[("webd", "trusted_proxies")] == "127.0.0.0/8, ::1"

    install_ok(tmp_path, "--role", "web", "--trusted-proxies", "198.51.100.0/24,127.0.0.0/8")
    conf = ini(read(tmp_path, "/etc/webd/webd.conf"))
    assert conf[("webd", "trusted_proxies")] == "198.51.100.0/24, 127.0.0.0/8"

    # 'local' stands for this machine's own subnets (the web host's, where its relays are).
    install_ok(tmp_path, "--role", "web", "--trusted-proxies", "127.0.0.0/8,local")
    conf = ini(read(tmp_path, "/etc/webd/webd.conf"))
    assert conf[("webd", "trusted_proxies")] == ", ".join(["127.0.0.0/8", *this_machines_subnets()])

    for bad in ("10.0.1", "nonsense", "198.51.100.0/24,,::1", "198.51.100.0/33", "local/24"):
        r = installer(tmp_path, "--role", "web", "--trusted-proxies", bad)
        assert r.returncode == 2, (bad, r.stdout + r.stderr)
        assert "--trusted-proxies" in r.stderr
    # Host bits set: webd's own check refuses the file, and the installer says so.
    r = installer(tmp_path, "--role", "web", "--trusted-proxies", "198.51.100.5/24")
    assert r.returncode != 0 and "trusted_proxies" in r.stdout + r.stderr
    r = installer(tmp_path, *LB_ARGS, "--trusted-proxies", "198.51.100.0/24")
    assert r.returncode == 2 and "--trusted-proxies does not apply to role lb" in r.stderr


@pytest.mark.parametrize("cidr,network", [("198.51.100.20/24", "198.51.100.0/24"), ("198.51.100.77/20", "198.51.96.0/20"),
                                          ("127.0.1.5/32", "127.0.1.5/32"), ("192.0.2.255/8", "192.0.0.0/8")])
def test_ipv4_network(cidr, network):
    with open(INSTALLER, encoding="utf-8") as f:
        text = f.read()
    function = re.search(r"^ipv4_network\(\) \{\n.*?^\}\n", text, re.M | re.S).group(0)
    r = run(["bash", "-c", function + 'ipv4_network "$1"', "bash", cidr])
    assert r.returncode == 0 and r.stdout.strip() == network, r.stdout + r.stderr


def test_web_user_data_names_the_lbs_subnets():
    """The web host's user data passes the load balancer's subnets (written in by the installer) to webd."""
    with open(os.path.join(os.path.dirname(INSTALLER), "..", "scripts", "cloud-init-web.sh"),
              encoding="utf-8") as f:
        text = f.read()
    assert re.search(r"^LBD_LB_NETWORKS=''$", text, re.M)
    assert re.search(r'--trusted-proxies "\$trusted"', text)


def test_uninstall_removes_and_keeps_data(tmp_path):
    install_ok(tmp_path, *LB_ARGS)
    install_ok(tmp_path, "--role", "web")
    install_ok(tmp_path, "--role", "backend", "--upstream", "127.0.1.20:8080")
    data = staged(tmp_path, "/var/lib/webd/jwt.key")
    os.makedirs(os.path.dirname(data))
    with open(data, "w", encoding="utf-8") as f:
        f.write("key\n")
    foreign = staged(tmp_path, "/etc/lbd/notes.txt")
    with open(foreign, "w", encoding="utf-8") as f:
        f.write("mine\n")
    r = run([INSTALLER, "--root", str(tmp_path), "--uninstall", "--prefix", PREFIX])
    assert r.returncode == 0, r.stdout + r.stderr
    for path in bin_paths() + ["/etc/lbd/lbd.conf", "/etc/lbd/relay.conf", "/etc/lbd/credentials",
                               "/etc/lbd/backend-user-data.sh", "/etc/webd/webd.conf", "/etc/webd/pgpass",
                               "/etc/webd", "/etc/systemd/system/lbd.service",
                               "/etc/systemd/system/lbd-relay.service", "/etc/systemd/system/webd.service"]:
        assert not os.path.exists(staged(tmp_path, path)), path
    assert os.path.exists(data)
    assert os.path.exists(foreign)
    # Twice is fine too.
    r = run([INSTALLER, "--root", str(tmp_path), "--uninstall", "--prefix", PREFIX])
    assert r.returncode == 0, r.stdout + r.stderr


def test_uninstall_keeps_files_it_did_not_write(tmp_path):
    conf = staged(tmp_path, "/etc/lbd/lbd.conf")
    os.makedirs(os.path.dirname(conf))
    with open(conf, "w", encoding="utf-8") as f:
        f.write("[lbd]\nlisten = 0.0.0.0:80\n")
    r = run([INSTALLER, "--root", str(tmp_path), "--uninstall"])
    assert r.returncode == 0
    assert os.path.exists(conf)


FAKE_LBCTL = """#!/bin/bash
printf '%s\\n' "$@" > "$(dirname "$0")/args"
echo "creating security groups"
echo "LBD_SECURITY_GROUP_LB=sg-0aaaaaaaaaaaaaaaa"
echo "LBD_SECURITY_GROUP_BACKEND=sg-0bbbbbbbbbbbbbbbb"
echo "LBD_SECURITY_GROUP_WEB=sg-0cccccccccccccccc"
echo "LBD_IMAGE=${FAKE_IMAGE:-ami-0dddddddddddddddd}"
echo "LBD_SUBNET=subnet-0eeeeeeeeeeeeeeee"
echo "LBD_WEB_INSTANCE=i-0fffffffffffffff0"
echo "LBD_UPSTREAM=127.0.1.30:8080"
"""


def provision_args():
    args = list(LB_ARGS)
    for flag in ("--upstream", "--image", "--security-groups"):
        i = args.index(flag)
        del args[i:i + 2]
    return args


def fake_lbctl(tmp_path):
    path = tmp_path / "fake" / "lbctl"
    path.parent.mkdir()
    path.write_text(FAKE_LBCTL)
    path.chmod(0o755)
    return path


def test_provision(tmp_path):
    lbctl = fake_lbctl(tmp_path)
    root = tmp_path / "root"
    r = install_ok(root, *provision_args(), env={"LBD_LBCTL": str(lbctl)})
    assert "127.0.1.30:8080" in r.stdout  # the web host is reported
    conf = ini(read(root, "/etc/lbd/lbd.conf"))
    assert conf[("ec2", "upstream")] == "127.0.1.30:8080"
    assert conf[("ec2", "image")] == "ami-0dddddddddddddddd"
    assert conf[("ec2", "subnet")] == "subnet-0123456789abcdef0"
    assert conf[("ec2", "security_groups")] == "sg-0bbbbbbbbbbbbbbbb"
    args = (lbctl.parent / "args").read_text().splitlines()
    assert args[0] == "provision"
    for flag, value in (("--region", "eu-west-3"), ("--endpoint", "http://127.0.0.1:5000"),
                        ("--tag", "lbd:pool=test"), ("--subnet", "subnet-0123456789abcdef0"),
                        ("--lb-port", "8000"), ("--backend-port", "80"),
                        ("--web-port", "8080"),
                        ("--credentials-file", staged(root, "/etc/lbd/credentials"))):
        assert args[args.index(flag) + 1] == value, (flag, args)
    assert "--web-user-data" in args
    assert SECRET not in "\n".join(args)


def test_provision_bad_value_is_refused(tmp_path):
    lbctl = fake_lbctl(tmp_path)
    root = tmp_path / "root"
    r = installer(root, *provision_args(), env={"LBD_LBCTL": str(lbctl), "FAKE_IMAGE": "ami-x;rm"})
    assert r.returncode == 1
    assert "LBD_IMAGE" in r.stderr
    assert not os.path.exists(staged(root, "/etc/lbd/lbd.conf"))


def test_provision_failure_fails(tmp_path):
    lbctl = tmp_path / "lbctl"
    lbctl.write_text("#!/bin/sh\necho 'lbctl: EC2 said no' >&2\nexit 1\n")
    lbctl.chmod(0o755)
    r = installer(tmp_path / "root", *provision_args(), env={"LBD_LBCTL": str(lbctl)})
    assert r.returncode == 1
    assert "provision" in r.stderr


@pytest.mark.parametrize("args,flag", [
    (["--role", "lb", "--region", "us-east-1"], "--access-key-id"),
    (["--role", "lb", "--access-key-id", KEY_ID, "--secret-access-key", SECRET], "--region"),
    (["--role", "lb", "--region", "us-east-1", "--access-key-id", KEY_ID], "--secret-access-key"),
    (["--role", "lb", "--instance-role", "--no-provision", "--image", "ami-0123456789abcdef0"],
     "--upstream"),
    (["--role", "lb", "--instance-role", "--upstream", "192.0.2.20:8080"], "--image"),
    (["--role", "lb", "--provider", "local"], "--upstream"),
    (["--role", "backend"], "--upstream"),
    (["--role", "lb", "--instance-role", "--region", "us-east-1"], "--subnet"),
])
def test_non_interactive_missing_flag(tmp_path, args, flag):
    r = installer(tmp_path, *args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"missing {flag}" in r.stderr
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("args,flag", [
    (["--role", "backend", "--upstream", "192.0.2.300:8080"], "--upstream"),
    (["--role", "backend", "--upstream", "web.example:8080"], "--upstream"),
    (["--role", "backend", "--upstream", "192.0.2.3:8080", "--listen", "0.0.0.0:70000"], "--listen"),
    (["--role", "lb", "--instance-role", "--upstream", "192.0.2.2:80", "--image", "ami-zz"], "--image"),
    (["--role", "lb", "--instance-role", "--upstream", "192.0.2.2:80", "--image", "ami-0123456789abcdef0",
      "--subnet", "subnet-1; rm"], "--subnet"),
    (["--role", "lb", "--instance-role", "--upstream", "192.0.2.2:80", "--image", "ami-0123456789abcdef0",
      "--security-groups", "sg-12345678,,sg-87654321"], "--security-groups"),
    (["--role", "lb", "--instance-role", "--upstream", "192.0.2.2:80", "--image", "ami-0123456789abcdef0",
      "--networks", "198.18.0.0/33"], "--networks"),
    (["--role", "lb", "--instance-role", "--upstream", "192.0.2.2:80", "--image", "ami-0123456789abcdef0",
      "--region", "Mars"], "--region"),
    (["--role", "lb", "--instance-role", "--upstream", "192.0.2.2:80", "--image", "ami-0123456789abcdef0",
      "--tag", "a b=c"], "--tag"),
    (["--role", "lb", "--instance-role", "--upstream", "192.0.2.2:80", "--image", "ami-0123456789abcdef0",
      "--endpoint", "ftp://x"], "--endpoint"),
    (["--role", "lb", "--instance-role", "--upstream", "192.0.2.2:80", "--image", "ami-0123456789abcdef0",
      "--admin", "0.0.0.0:9180"], "--admin"),
    (["--role", "lb", "--instance-role", "--upstream", "192.0.2.2:80", "--image", "ami-0123456789abcdef0",
      "--desired", "1001"], "--desired"),
    (["--role", "web", "--database", "dbname=x ;comment"], "--database"),
    (["--role", "web", "--upstream", "192.0.2.2:80"], "--upstream"),
    (["--role", "web", "--admin", "127.0.0.1:9181"], "--admin"),
    (["--role", "backend", "--upstream", "192.0.2.2:80", "--admin", "192.0.2.3:9180"], "--admin"),
    (["--role", "backend", "--upstream", "192.0.2.2:80", "--secret-access-key-file", "/nonexistent"],
     "--secret-access-key-file"),
    (["--role", "lb", "--provider", "local", "--upstream", "192.0.2.2:80", "--secret-access-key-file",
      "/nonexistent"], "--secret-access-key-file"),
    (["--role", "lb", "--instance-role", "--upstream", "192.0.2.2:80", "--image", "ami-0123456789abcdef0",
      "--secret-access-key-file", "/nonexistent"], "--secret-access-key-file"),
    (["--role", "dns"], "--role"),
    (["--bogus"], "--bogus"),
])
def test_bad_values_exit_2(tmp_path, args, flag):
    r = installer(tmp_path, *args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert flag in r.stderr
    assert not os.listdir(tmp_path)


def test_bad_secret_is_not_echoed(tmp_path):
    bad = "not a key but secret-ish 1234567"
    r = installer(tmp_path, "--role", "lb", "--region", "us-east-1", "--access-key-id", KEY_ID,
                  "--secret-access-key", bad, "--upstream", "192.0.2.2:80", "--image", "ami-0123456789abcdef0")
    assert r.returncode == 2
    assert "--secret-access-key" in r.stderr
    assert bad not in r.stdout + r.stderr


# The secret access key from a file, from the environment, or (warned about) from the command line.

WARNING = "process list"  # the warning about --secret-access-key on the command line


def without(args, *flags):
    """<args> without <flags> and their values."""
    args = list(args)
    for flag in flags:
        i = args.index(flag)
        del args[i:i + 2]
    return args


def secret_file(tmp_path, content, name="aws-secret"):
    path = tmp_path / name
    path.write_text(content, newline="")
    path.chmod(0o600)
    return path


def assert_quiet(r, *secrets):
    """The installer's output holds none of <secrets> (SECRET always)."""
    for secret in (SECRET, *secrets):
        assert secret not in r.stdout + r.stderr, r.stdout + r.stderr


def test_secret_argv_warns(lb_root):
    _, r = lb_root
    assert WARNING in r.stderr
    warning = next(line for line in r.stderr.splitlines() if WARNING in line)
    assert "warning" in warning and "--secret-access-key" in warning
    assert "--secret-access-key-file" in warning and "AWS_SECRET_ACCESS_KEY" in warning
    assert_quiet(r)


@pytest.mark.parametrize("content", [SECRET + "\n", SECRET, SECRET + "\r\n", SECRET + "\n\n"],
                         ids=["newline", "no-newline", "crlf", "blank-line-after"])
def test_secret_file_writes_same_credentials(lb_root, tmp_path, content):
    flag_root, _ = lb_root
    path = secret_file(tmp_path, content)
    root = tmp_path / "root"
    r = install_ok(root, *without(LB_ARGS, "--secret-access-key"), "--secret-access-key-file", str(path))
    assert WARNING not in r.stderr, r.stderr
    assert read(root, "/etc/lbd/credentials") == read(flag_root, "/etc/lbd/credentials")
    assert mode(root, "/etc/lbd/credentials") == 0o600
    assert read(root, "/etc/lbd/lbd.conf") == read(flag_root, "/etc/lbd/lbd.conf")


def test_secret_file_from_stdin(lb_root, tmp_path):
    flag_root, _ = lb_root
    r = installer(tmp_path, *without(LB_ARGS, "--secret-access-key"), "--secret-access-key-file=/dev/stdin",
                  stdin_text=SECRET + "\n")
    assert r.returncode == 0, r.stdout + r.stderr
    assert_quiet(r)
    assert WARNING not in r.stderr
    assert read(tmp_path, "/etc/lbd/credentials") == read(flag_root, "/etc/lbd/credentials")


def test_secret_env_fallback(lb_root, tmp_path):
    flag_root, _ = lb_root
    args = without(LB_ARGS, "--access-key-id", "--secret-access-key")
    r = install_ok(tmp_path, *args, env={"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET})
    assert KEY_ID not in r.stdout + r.stderr
    assert WARNING not in r.stderr, r.stderr
    assert read(tmp_path, "/etc/lbd/credentials") == read(flag_root, "/etc/lbd/credentials")


OTHER_SECRET = "Zz9/Zz9+Zz9=OTHERSECRETFROMTHEENVIRONMENT"
OTHER_KEY_ID = "AKIAOTHERKEYIDENV000"


@pytest.mark.parametrize("form", ["file", "argv"])
def test_secret_flags_win_over_env(tmp_path, form):
    path = secret_file(tmp_path, SECRET + "\n")
    args = without(LB_ARGS, "--secret-access-key")
    args += ["--secret-access-key-file", str(path)] if form == "file" else ["--secret-access-key", SECRET]
    root = tmp_path / "root"
    env = {"AWS_ACCESS_KEY_ID": OTHER_KEY_ID, "AWS_SECRET_ACCESS_KEY": OTHER_SECRET}
    r = install_ok(root, *args, env=env)
    assert_quiet(r, OTHER_SECRET)
    creds = ini(read(root, "/etc/lbd/credentials"))
    assert creds[("default", "aws_access_key_id")] == KEY_ID
    assert creds[("default", "aws_secret_access_key")] == SECRET


def test_secret_env_ignored_with_instance_role(tmp_path):
    args = without(LB_ARGS, "--access-key-id", "--secret-access-key")
    r = install_ok(tmp_path, *args, "--instance-role",
                   env={"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET})
    assert WARNING not in r.stderr
    assert not os.path.exists(staged(tmp_path, "/etc/lbd/credentials"))


def test_secret_missing_names_the_safe_sources(tmp_path):
    r = installer(tmp_path, *without(LB_ARGS, "--secret-access-key"))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "missing --secret-access-key-file PATH or AWS_SECRET_ACCESS_KEY" in r.stderr
    assert not os.listdir(tmp_path)
    r = installer(tmp_path, *without(LB_ARGS, "--access-key-id"), env={"AWS_SECRET_ACCESS_KEY": SECRET})
    assert r.returncode == 2, r.stdout + r.stderr
    assert "missing --access-key-id or AWS_ACCESS_KEY_ID" in r.stderr
    assert_quiet(r)
    assert not os.listdir(tmp_path)


def unix_socket(path):
    """A file that exists and that nobody, root included, can open for reading."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    return s


@pytest.mark.parametrize("kind,message", [
    ("missing", "does not exist"),
    ("directory", "is a directory"),
    ("unopenable", "cannot read"),
    ("unreadable", "not readable"),
    ("empty", "is empty"),
    ("blank", "is empty"),
    ("two-lines", "more than one line"),
    ("two-lines-crlf", "more than one line"),
    ("not-a-key", "not an AWS secret access key"),
])
def test_secret_file_refused(tmp_path, kind, message):
    path = tmp_path / "aws-secret"
    sock = None
    if kind == "directory":
        path.mkdir()
    elif kind == "unopenable":
        sock = unix_socket(path)
    elif kind == "unreadable":
        if os.geteuid() == 0:
            pytest.skip("root reads a file of mode 0000")
        secret_file(tmp_path, SECRET + "\n").chmod(0)
    elif kind != "missing":
        content = {"empty": "", "blank": "\n \r\n\n", "two-lines": SECRET + "\nsecond line\n",
                   "two-lines-crlf": SECRET + "\r\n" + SECRET + "\r\n",
                   "not-a-key": "not a key but secret-ish 1234567\n"}[kind]
        secret_file(tmp_path, content)
    root = tmp_path / "root"
    try:
        r = installer(root, *without(LB_ARGS, "--secret-access-key"), "--secret-access-key-file", str(path),
                      env={"AWS_SECRET_ACCESS_KEY": OTHER_SECRET})
    finally:
        if sock is not None:
            sock.close()
    assert r.returncode == 2, r.stdout + r.stderr
    assert "--secret-access-key-file" in r.stderr and message in r.stderr, r.stderr
    assert_quiet(r, OTHER_SECRET, "second line", "secret-ish")
    assert not os.listdir(root)


def test_secret_both_flags_exit_2(tmp_path):
    path = secret_file(tmp_path, SECRET + "\n")
    root = tmp_path / "root"
    r = installer(root, *LB_ARGS, "--secret-access-key-file", str(path))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "--secret-access-key-file or --secret-access-key, not both" in r.stderr
    assert_quiet(r)
    assert not os.listdir(root)


def test_bad_secret_from_env_is_not_echoed(tmp_path):
    bad = "not a key but secret-ish 1234567"
    r = installer(tmp_path, *without(LB_ARGS, "--secret-access-key"), env={"AWS_SECRET_ACCESS_KEY": bad})
    assert r.returncode == 2
    assert "AWS_SECRET_ACCESS_KEY" in r.stderr
    assert bad not in r.stdout + r.stderr
    assert not os.listdir(tmp_path)


def test_help():
    r = run([INSTALLER, "--help"])
    assert r.returncode == 0
    for flag in ("--role", "--non-interactive", "--root", "--uninstall", "--no-packages", "--prefix",
                 "--source", "--provision", "--database", "--instance-role", "--secret-access-key-file",
                 "--secret-access-key", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"):
        assert flag in r.stdout


def test_interactive_prompt(tmp_path):
    """On a terminal, a missing value is asked for; a secret is read without echo."""
    env = {k: v for k, v in os.environ.items() if k not in AWS_ENV}
    env["LBD_BUILD_DIR"] = BUILD
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(INSTALLER, [INSTALLER, "--root", str(tmp_path), "--no-packages", "--prefix", PREFIX,
                              "--role", "lb", "--no-provision", "--upstream", "127.0.1.20:8080",
                              "--image", "ami-0123456789abcdef0"], env)
    answers = [("AWS region", "eu-west-1"), ("access key ID", KEY_ID), ("secret access key", SECRET)]
    seen = b""
    deadline = time.monotonic() + 120
    status = None
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                chunk = b""
            if not chunk:
                break
            seen += chunk
            while answers and answers[0][0].encode() in seen:
                os.write(fd, (answers.pop(0)[1] + "\n").encode())
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
    else:
        os.kill(pid, 9)
    if status is None or not os.WIFEXITED(status):
        _, status = os.waitpid(pid, 0)
    text = seen.decode(errors="replace")
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, text
    assert not answers, text
    assert SECRET not in text
    conf = ini(read(tmp_path, "/etc/lbd/lbd.conf"))
    assert conf[("ec2", "region")] == "eu-west-1"
    creds = ini(read(tmp_path, "/etc/lbd/credentials"))
    assert creds[("default", "aws_secret_access_key")] == SECRET


def test_lb_lease(tmp_path):
    """Two LB hosts on one pool: --lease-database writes the connection string to its own file (0600,
    never in the config or the output) and a [lease] section lbd accepts, with the Elastic IP and the
    instance it goes to; flags that need the lease are refused without it."""
    conninfo = "host=192.0.2.20 dbname=lbd_lease user=lbd_lease password=lease-secret-1"
    r = install_ok(tmp_path, *LB_ARGS, "--lease-database", conninfo, "--lease-name", "lb-a",
                   "--elastic-ip", "eipalloc-0123456789abcdef0", "--instance-id", "i-0123456789abcdef0")
    assert "lease-secret-1" not in r.stdout + r.stderr
    assert mode(tmp_path, "/etc/lbd/lease.conninfo") == 0o600
    lines = [l for l in read(tmp_path, "/etc/lbd/lease.conninfo").splitlines() if l and not l.startswith("#")]
    assert lines == [conninfo]
    text = read(tmp_path, "/etc/lbd/lbd.conf")
    assert "lease-secret-1" not in text
    conf = ini(text)
    assert conf[("lease", "conninfo_file")] == "/etc/lbd/lease.conninfo"
    assert conf[("lease", "name")] == "lb-a"
    assert conf[("lease", "elastic_ip")] == "eipalloc-0123456789abcdef0"
    assert conf[("lease", "instance_id")] == "i-0123456789abcdef0"
    r = run([LBD, "--config", staged(tmp_path, "/etc/lbd/lbd.conf"), "--check-config"])
    assert r.returncode == 0, r.stdout + r.stderr

    for bad in (["--elastic-ip", "eipalloc-0123456789abcdef0"], ["--lease-name", "lb-a"],
                ["--lease-database", conninfo, "--lease-name", "lb a"],
                ["--lease-database", conninfo, "--elastic-ip", "eip-1"],
                ["--peer", "192.0.2.7"],
                ["--lease-database", conninfo, "--peer", "lb-b.example"],
                ["--lease-database", conninfo, "--peer", "192.0.2.7:0"],
                ["--lease-database", conninfo, "--peer", "192.0.2.7\n[lbd]"],
                ["--lease-database", conninfo, "--peer", "2001:db8::7"],
                ["--lease-database", conninfo, *[a for i in range(1, 10) for a in ("--peer", f"192.0.2.{i}")]]):
        r = installer(tmp_path / "bad", *LB_ARGS, *bad)
        assert r.returncode == 2, (bad, r.stdout + r.stderr)
        assert "lease-secret-1" not in r.stdout + r.stderr


def test_lb_lease_peers(tmp_path):
    """--peer, repeated: the other LB hosts' lease listeners in [lease] peers (port 9181 unless given) and
    this host's own listener, in a config lbd accepts."""
    conninfo = "host=192.0.2.20 dbname=lbd_lease user=lbd_lease password=lease-secret-1"
    # LB_ARGS's admin port is the lease listener's: refused, said so.
    r = installer(tmp_path / "bad", *LB_ARGS, "--lease-database", conninfo, "--peer", "192.0.2.7")
    assert r.returncode == 2 and "takes port 9181" in r.stderr, r.stdout + r.stderr
    install_ok(tmp_path, *LB_ARGS, "--admin", "127.0.0.1:9180", "--lease-database", conninfo,
               "--peer", "192.0.2.7", "--peer", "[2001:db8::7]:9200")
    conf = ini(read(tmp_path, "/etc/lbd/lbd.conf"))
    assert conf[("lease", "listen")] == "0.0.0.0:9181"
    assert conf[("lease", "peers")] == "192.0.2.7:9181,[2001:db8::7]:9200"
    r = run([LBD, "--config", staged(tmp_path, "/etc/lbd/lbd.conf"), "--check-config"])
    assert r.returncode == 0, r.stdout + r.stderr
    # Without --peer, neither key.
    install_ok(tmp_path / "alone", *LB_ARGS, "--admin", "127.0.0.1:9180", "--lease-database", conninfo)
    conf = ini(read(tmp_path / "alone", "/etc/lbd/lbd.conf"))
    assert ("lease", "listen") not in conf and ("lease", "peers") not in conf
