"""Virtual-hosted addressing and HTTPS, against s3rver instances of their own.

Checked with boto3 (path-style, over a trusted CA) as the independent client.
"""

import subprocess

import pytest

from helpers import ok, one_error_line
from conftest import boto3_client, new_bucket_name


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """A throwaway CA and a server certificate it signed, for 127.0.0.1 and
    localhost."""
    d = tmp_path_factory.mktemp("tls")

    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=s3cachefs test CA", "-keyout", "ca.key", "-out", "ca.pem")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", "server.key", "-out", "server.csr")
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "server.pem")
    return d / "server.pem", d / "server.key", d / "ca.pem"


@pytest.fixture(scope="module")
def tls_server(tls_files, tmp_path_factory):
    from conftest import S3rver

    server = S3rver(tmp_path_factory.mktemp("s3rver-tls"), tls=tls_files).start()
    yield server
    server.stop()


def test_https_with_ca_bundle(cli, tls_server, tls_files):
    ca = tls_files[2]
    s3 = boto3_client(tls_server.endpoint, verify=str(ca))
    bucket = new_bucket_name()
    s3.create_bucket(Bucket=bucket)
    body = bytes(range(256)) * 4096
    s3.put_object(Bucket=bucket, Key="in/boto", Body=body)
    opts = f"ca_bundle={ca}"
    out = ok(*cli("-o", opts, "get", f"s3://{bucket}/in/boto", endpoint=tls_server.endpoint))
    assert out == body
    ok(*cli("-o", opts, "put", "-", f"s3://{bucket}/out/cli", input=body[:12345],
            endpoint=tls_server.endpoint))
    assert s3.get_object(Bucket=bucket, Key="out/cli")["Body"].read() == body[:12345]


def test_https_untrusted_certificate_is_refused(cli, tls_server, tls_files):
    s3 = boto3_client(tls_server.endpoint, verify=str(tls_files[2]))
    bucket = new_bucket_name()
    s3.create_bucket(Bucket=bucket)
    rc, out, err = cli("ls", f"s3://{bucket}", endpoint=tls_server.endpoint)
    line = one_error_line(rc, err, 1)
    assert "certificate" in line, line
    assert out == b""


def test_https_insecure_skips_verification(cli, tls_server, tls_files):
    s3 = boto3_client(tls_server.endpoint, verify=str(tls_files[2]))
    bucket = new_bucket_name()
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"insecure but works")
    out = ok(*cli("-o", "insecure", "get", f"s3://{bucket}/k", endpoint=tls_server.endpoint))
    assert out == b"insecure but works"


@pytest.fixture(scope="module")
def vhost_server(tmp_path_factory):
    """s3rver taking the bucket from the host name: BUCKET.s3.localhost."""
    from conftest import S3rver

    server = S3rver(tmp_path_factory.mktemp("s3rver-vhost"),
                    extra_args=["--service-endpoint", "localhost"]).start()
    yield server
    server.stop()


def test_virtual_hosted_addressing(cli, vhost_server):
    s3 = boto3_client(vhost_server.endpoint)
    bucket = new_bucket_name()
    s3.create_bucket(Bucket=bucket)
    endpoint = f"http://s3.localhost:{vhost_server.port}"
    vhost_server.clear_log()
    ok(*cli("-o", "virtual_host", "put", "-", f"s3://{bucket}/dir/v host+key",
            input=b"via the host name", endpoint=endpoint))
    assert s3.get_object(Bucket=bucket, Key="dir/v host+key")["Body"].read() == b"via the host name"
    out = ok(*cli("-o", "virtual_host", "ls", "-r", f"s3://{bucket}", endpoint=endpoint))
    assert out.decode().rstrip("\n").split("\t")[2] == "dir/v host+key"
    # ours travelled with the bucket in the Host header, not in the path
    # (the GET in between is boto3's, path-style)
    lines = vhost_server.log_lines()
    assert len(lines) == 3, lines
    assert lines[0] == "PUT /dir/v%20host%2Bkey", lines
    assert lines[1].startswith(f"GET /{bucket}/"), lines
    assert lines[2].startswith("GET /?") and "list-type=2" in lines[2], lines
