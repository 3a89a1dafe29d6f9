"""The S3 client library through the CLI: what happens to a multipart
upload that fails, whether connections are reused, where credentials come
from, and conditional GETs.  Results are checked with boto3 and the server's
request log, never with the tool alone.
"""

import os
import re
import stat

import pytest
from botocore.exceptions import ClientError

from helpers import ok, one_error_line
from conftest import ALT_ACCESS_KEY, ALT_SECRET_KEY

MiB = 1024 * 1024
STATS_RE = re.compile(r"stats: (\d+) requests over (\d+) connections")


def no_env_creds():
    return {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None}


# ---- multipart failure ---------------------------------------------------------------------


def test_failed_multipart_upload_is_aborted(cli, s3, bucket, proxy, request_log, tmp_path):
    """A part that keeps failing fails the put with one line, and the
    upload is aborted so no parts are left behind on the server."""
    (tmp_path / "f").write_bytes(os.urandom(11 * MiB))
    proxy.add("500", count=None, method="PUT", path="partNumber=2")
    rc, _, err = cli("-o", "retries=1,multipart_threshold=5M,part_size=5M,parallel=1", "put",
                     tmp_path / "f", f"s3://{bucket}/mp", endpoint=proxy.endpoint)
    one_error_line(rc, err, 1)
    aborts = [line for line in request_log.log_lines()
              if line.startswith(f"DELETE /{bucket}/mp?uploadId=")]
    assert len(aborts) == 1, request_log.log_lines()
    upload_id = aborts[0].split("uploadId=", 1)[1]
    with pytest.raises(ClientError) as e:
        # (s3rver has no ListParts; a part sent to a gone upload is refused)
        s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload_id, PartNumber=1, Body=b"x")
    assert e.value.response["Error"]["Code"] == "NoSuchUpload"
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="mp")


# ---- connection reuse ----------------------------------------------------------------------


def test_connections_are_reused(cli, s3, bucket, tmp_path):
    """Eight requests (create, six parts, complete) with two parts in
    flight ride at most two connections."""
    data = os.urandom(30 * MiB)
    (tmp_path / "f").write_bytes(data)
    rc, _, err = cli("-vv", "-o", "multipart_threshold=5M,part_size=5M,parallel=2", "put",
                     tmp_path / "f", f"s3://{bucket}/reuse")
    ok(rc, b"", err)
    m = STATS_RE.search(err)
    assert m, err
    requests, connections = int(m.group(1)), int(m.group(2))
    assert requests == 8, err
    assert 1 <= connections <= 2, err
    assert s3.get_object(Bucket=bucket, Key="reuse")["Body"].read() == data


# ---- credentials ---------------------------------------------------------------------------


def write_home_file(tmp_path, rel, text, mode=0o600):
    path = tmp_path / "home" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def test_default_profile_from_shared_file(cli, s3, bucket, tmp_path):
    s3.put_object(Bucket=bucket, Key="k", Body=b"via ~/.aws/credentials")
    write_home_file(tmp_path, ".aws/credentials",
                    f"[default]\naws_access_key_id = {ALT_ACCESS_KEY}\n"
                    f"aws_secret_access_key = {ALT_SECRET_KEY}\n")
    out = ok(*cli("get", f"s3://{bucket}/k", env=no_env_creds()))
    assert out == b"via ~/.aws/credentials"


@pytest.mark.parametrize("how", ["option", "AWS_PROFILE"])
def test_named_profile(cli, s3, bucket, tmp_path, how):
    s3.put_object(Bucket=bucket, Key="k", Body=b"named profile")
    write_home_file(tmp_path, ".aws/credentials",
                    "[default]\naws_access_key_id = nobody\naws_secret_access_key = wrong\n"
                    f"[alt]\naws_access_key_id = {ALT_ACCESS_KEY}\n"
                    f"aws_secret_access_key = {ALT_SECRET_KEY}\n")
    env = no_env_creds()
    args = ["get", f"s3://{bucket}/k"]
    if how == "option":
        args = ["-o", "profile=alt", *args]
    else:
        env["AWS_PROFILE"] = "alt"
    assert ok(*cli(*args, env=env)) == b"named profile"


def test_profile_option_beats_environment(cli, s3, bucket, tmp_path):
    """An explicit profile= wins over AWS_ACCESS_KEY_ID in the environment
    (which the cli fixture sets to the server's keys): a profile holding a
    wrong secret must fail, proving it was used."""
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    write_home_file(tmp_path, ".aws/credentials",
                    f"[bad]\naws_access_key_id = {ALT_ACCESS_KEY}\naws_secret_access_key = wrong\n")
    rc, _, err = cli("-o", "profile=bad", "get", f"s3://{bucket}/k")
    line = one_error_line(rc, err, 1)
    assert "signature" in line and "profile 'bad'" in line, line
    assert "wrong" not in err


def test_missing_profile_is_named(cli, bucket, tmp_path):
    write_home_file(tmp_path, ".aws/credentials", "[default]\naws_access_key_id = a\n"
                    "aws_secret_access_key = b\n")
    rc, _, err = cli("-o", "profile=nosuch", "ls", f"s3://{bucket}", env=no_env_creds())
    assert "nosuch" in one_error_line(rc, err, 1)


def test_profile_region_from_config(cli, s3rver, bucket, tmp_path):
    """~/.aws/config gives the region of the profile whose keys are used: a
    wrong one there is what the server then complains about."""
    write_home_file(tmp_path, ".aws/credentials",
                    f"[alt]\naws_access_key_id = {ALT_ACCESS_KEY}\n"
                    f"aws_secret_access_key = {ALT_SECRET_KEY}\n")
    write_home_file(tmp_path, ".aws/config", "[profile alt]\nregion = eu-west-1\n")
    rc, _, err = cli("-o", "profile=alt", "ls", f"s3://{bucket}", env=no_env_creds())
    line = one_error_line(rc, err, 1)
    assert "'us-east-1'" in line and "'eu-west-1'" in line, line


def test_passwd_file(cli, s3, bucket, tmp_path):
    s3.put_object(Bucket=bucket, Key="k", Body=b"passwd file")
    pw = write_home_file(tmp_path, "pw", f"other-bucket:a:b\n{bucket}:{ALT_ACCESS_KEY}:{ALT_SECRET_KEY}\n")
    out = ok(*cli("-o", f"passwd_file={pw}", "get", f"s3://{bucket}/k", env=no_env_creds()))
    assert out == b"passwd file"


def test_passwd_file_readable_by_others_is_refused(cli, bucket, tmp_path):
    pw = write_home_file(tmp_path, "pw", f"{ALT_ACCESS_KEY}:{ALT_SECRET_KEY}\n", mode=0o644)
    assert stat.S_IMODE(pw.stat().st_mode) == 0o644
    rc, _, err = cli("-o", f"passwd_file={pw}", "ls", f"s3://{bucket}", env=no_env_creds())
    line = one_error_line(rc, err, 1)
    assert "600" in line, line
    assert ALT_SECRET_KEY not in err


def test_s3fs_default_passwd_file(cli, s3, bucket, tmp_path):
    s3.put_object(Bucket=bucket, Key="k", Body=b"~/.passwd-s3fs")
    write_home_file(tmp_path, ".passwd-s3fs", f"{ALT_ACCESS_KEY}:{ALT_SECRET_KEY}\n")
    assert ok(*cli("get", f"s3://{bucket}/k", env=no_env_creds())) == b"~/.passwd-s3fs"


def test_no_credentials_anywhere(cli, bucket):
    rc, _, err = cli("ls", f"s3://{bucket}", env=no_env_creds())
    line = one_error_line(rc, err, 1)
    assert "no credentials" in line, line


def test_anonymous_sends_no_signature(cli, s3, bucket):
    """-o anonymous signs nothing: with an unknown key in the environment a
    signed request is refused by the server (it checks signatures), so only
    an unsigned one can succeed (s3rver serves unsigned requests, as S3 does
    for a public bucket)."""
    s3.put_object(Bucket=bucket, Key="pub", Body=b"public")
    wrong = {"AWS_ACCESS_KEY_ID": "UNKNOWNKEY", "AWS_SECRET_ACCESS_KEY": "nope"}
    rc, _, err = cli("get", f"s3://{bucket}/pub", env=wrong)
    assert "InvalidAccessKeyId" in one_error_line(rc, err, 1)
    out = ok(*cli("-o", "anonymous", "get", f"s3://{bucket}/pub", env=wrong))
    assert out == b"public"


# ---- conditional GET ------------------------------------------------------------------------


def test_get_if_none_match(cli, s3, bucket, tmp_path):
    s3.put_object(Bucket=bucket, Key="k", Body=b"version one")
    etag = s3.head_object(Bucket=bucket, Key="k")["ETag"]
    dest = tmp_path / "copy"
    dest.write_bytes(b"my local copy")
    # unchanged: 304, and the local file is left exactly as it was
    ok(*cli("get", "--if-none-match", etag, f"s3://{bucket}/k", dest))
    assert dest.read_bytes() == b"my local copy"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("copy.")] == []
    # changed: downloaded
    s3.put_object(Bucket=bucket, Key="k", Body=b"version two")
    ok(*cli("get", "--if-none-match", etag, f"s3://{bucket}/k", dest))
    assert dest.read_bytes() == b"version two"
