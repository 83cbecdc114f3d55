"""A DICOMweb client (QIDO-RS, WADO-RS, STOW-RS) with the interface of the DIMSE ``PacsClient``.

:class:`DicomWebClient` finds studies, series and instances (QIDO-RS), retrieves a study or some of its series into
``out_dir/{SeriesInstanceUID}/{SOPInstanceUID}.dcm`` (WADO-RS) and stores DICOM files such as the SR/SEG results
(STOW-RS), on top of ``dicomweb_client.api.DICOMwebClient`` (PyPI ``dicomweb-client``, the extra
``medmonai[dicomweb]``). Where the two overlap it answers exactly like ``PacsClient``: the same keys in the query
results (UIDs, dates, modalities, counts; never patient names or ids), the same file layout, names made safe with
:func:`medmonai.utils.safe_output_path` (UIDs from the network are untrusted), files written atomically. So
:func:`medmonai.deploy.pipeline.watch_pacs` takes either client.

Only the URL given is contacted: proxies, ``.netrc`` and the other ``requests`` environment settings are ignored and
redirects are refused (an error names the URL to give instead). Every failure is a :class:`DicomWebError` naming the
URL, the operation and the HTTP status (401/403 with a hint about the credentials).

Example::

    from medmonai.deploy.dicomweb import DicomWebClient

    web = DicomWebClient("http://127.0.0.1:8042/dicom-web")   # Orthanc with its DICOMweb plugin
    web.store(files)                                           # STOW-RS
    studies = web.find_studies(StudyDate="20240101-")          # QIDO-RS
    files = web.retrieve(studies[0]["StudyInstanceUID"], "retrieved/")   # WADO-RS
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pydicom
from monai.utils import optional_import
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from medmonai.deploy.pacs import _INSTANCE_KEYS, _SERIES_KEYS, _STUDY_KEYS, PacsClient, PacsError, _to_dict
from medmonai.utils import PathLike, atomic_write, safe_output_path

requests, _ = optional_import("requests")  # a dependency of dicomweb-client (the dicomweb extra)

__all__ = ["DicomWebError", "DicomWebClient", "is_dicomweb_url", "make_client"]

logger = logging.getLogger(__name__)

#: environment variables read by :func:`make_client` for the credentials (never given on a command line)
PASSWORD_ENV = "MEDMONAI_DICOMWEB_PASSWORD"
TOKEN_ENV = "MEDMONAI_DICOMWEB_TOKEN"
#: instances per STOW-RS request
STORE_BATCH = 32
#: results per QIDO-RS request (the search pages with offset until a page is shorter)
QIDO_PAGE = 500


class DicomWebError(PacsError):
    """A DICOMweb request failed; the message names the URL, the operation and the HTTP status."""


def is_dicomweb_url(text: str) -> bool:
    """True for an ``http://`` or ``https://`` URL (a DICOMweb service), False for a DIMSE ``AET@HOST:PORT``."""
    return str(text).lower().startswith(("http://", "https://"))


def _api() -> Any:
    api, ok = optional_import("dicomweb_client.api")
    if not ok:
        raise RuntimeError("DICOMweb needs the package dicomweb-client: pip install 'medmonai[dicomweb]'")
    return api


class DicomWebClient:
    """DICOMweb user agent (QIDO-RS, WADO-RS, STOW-RS) for one service, e.g. ``http://host:8042/dicom-web``.

    Args:
        url: the service's base URL (``http`` or ``https``; the studies are at ``{url}/studies``).
        timeout: seconds to connect and per read.
        username: HTTP basic authentication user (with ``password``).
        password: its password.
        token: an OAuth/OpenID bearer token (``Authorization: Bearer ...``); not together with ``username``.
        ca_bundle: a CA certificate file for ``https`` (default: the system's).
        headers: further HTTP headers sent with every request.
    """

    def __init__(
        self,
        url: str,
        timeout: float = 30.0,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        ca_bundle: PathLike | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        parts = urlsplit(str(url))
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(
                f"expected a DICOMweb base URL such as http://127.0.0.1:8042/dicom-web (no query), got {url!r}"
            )
        if parts.username or parts.password:
            raise ValueError(f"{parts.hostname}: put no credentials in the URL; use username/password or a token")
        if token and username:
            raise ValueError("give either username/password (basic authentication) or a bearer token, not both")
        if username and password is None:
            raise ValueError(f"DICOMweb user {username!r}: no password given")
        api = _api()

        self.url = str(url).rstrip("/")
        self.timeout = float(timeout)
        session = requests.Session()
        session.trust_env = False  # no proxies, .netrc or CA settings from the environment: only this URL
        session.max_redirects = 0  # a redirect would lead elsewhere: refused (see _call)
        if username:
            session.auth = (username, password)
        if ca_bundle is not None:
            session.verify = str(ca_bundle)
        extra = dict(headers or {})
        if token:
            extra["Authorization"] = f"Bearer {token}"
        self._client = api.DICOMwebClient(self.url, session=session, headers=extra or None, timeout=self.timeout)
        self._client.set_http_retry_params(retry=True, max_attempts=3, wait_exponential_multiplier=200)

    def __str__(self) -> str:
        return self.url

    # ------------------------------------------------------------------------------------------ requests
    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one ``dicomweb_client`` call; translate its failures into :class:`DicomWebError`."""
        try:
            result = fn(*args, **kwargs)
            return list(result) if what.startswith("WADO") else result  # iterators fail while iterated
        except requests.HTTPError as e:
            r = e.response
            status = f"HTTP {r.status_code} {r.reason or ''}".strip() if r is not None else str(e)
            where = r.url if r is not None and r.url else self.url
            hint = ""
            if r is not None and r.status_code in (401, 403):
                hint = f" (check the credentials: --dicomweb-user and ${PASSWORD_ENV}, or ${TOKEN_ENV})"
            elif r is not None and r.status_code == 404:
                hint = " (not found: is the URL the service's root, e.g. http://host:8042/dicom-web?)"
            raise DicomWebError(f"{where}: {what} failed: {status}{hint}") from e
        except requests.TooManyRedirects as e:
            target = e.response.headers.get("Location") if e.response is not None else None
            raise DicomWebError(
                f"{self.url}: {what}: the server redirects to {target or 'another URL'}; redirects are not followed, "
                "give the final URL"
            ) from e
        except requests.RequestException as e:
            raise DicomWebError(f"{self.url}: {what} failed: {type(e).__name__}: {e}") from e
        except (InvalidDicomError, ValueError, KeyError, TypeError) as e:  # a bad UID, a malformed answer (DICOM...)
            raise DicomWebError(f"{self.url}: {what} failed: {type(e).__name__}: {e}") from e

    def echo(self) -> bool:
        """A one-study QIDO-RS query: True when the service answers, else raises :class:`DicomWebError`."""
        self._call("QIDO-RS (echo)", self._client.search_for_studies, limit=1)
        return True

    # ----------------------------------------------------------------------------------------------- find
    def _search(self, what: str, fn: Any, keys: Sequence[str], match: Mapping[str, str], **kw: Any) -> list[dict]:
        """A QIDO-RS search, page by page (``QIDO_PAGE`` results per request), as PacsClient-style dicts.

        A server that ignores ``offset`` (a page repeats results already seen) is an error, not an endless loop.
        """
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        filters = dict(match) or None
        while True:
            page = self._call(
                what, fn, fields=list(keys), search_filters=filters, limit=QIDO_PAGE, offset=len(out), **kw
            )
            for row in page:
                try:
                    ds = Dataset.from_json(row)
                except Exception as e:  # noqa: BLE001 - pydicom raises several types for malformed DICOM JSON
                    raise DicomWebError(f"{self.url}: {what}: unreadable DICOM JSON in the answer ({e})") from e
                item = _to_dict(ds, keys)
                uid = str(item.get(keys[0]))
                if uid in seen:
                    raise DicomWebError(
                        f"{self.url}: {what}: the server repeats {keys[0]} {uid} (it does not page with offset/limit)"
                    )
                seen.add(uid)
                out.append(item)
            if len(page) < QIDO_PAGE:
                return out

    def find_studies(self, **match: str) -> list[dict[str, Any]]:
        """QIDO-RS at study level; ``match`` holds matching keys (``StudyDate="20240101-"``, ``ModalitiesInStudy``).

        Returns:
            One dict per study with StudyInstanceUID, StudyDate, StudyTime, ModalitiesInStudy and the numbers of
            series and instances, as :meth:`PacsClient.find_studies` (no patient attributes, even when the server
            sends them).
        """
        return self._search("QIDO-RS studies", self._client.search_for_studies, _STUDY_KEYS, match)

    def find_series(self, study_uid: str, **match: str) -> list[dict[str, Any]]:
        """QIDO-RS of the series of a study: SeriesInstanceUID, Modality, SeriesNumber, description, instance count."""
        fn = self._client.search_for_series
        return self._search("QIDO-RS series", fn, _SERIES_KEYS, match, study_instance_uid=study_uid)

    def find_instances(self, study_uid: str, series_uid: str) -> list[dict[str, Any]]:
        """QIDO-RS of the instances of a series: SOPInstanceUID, SOPClassUID, InstanceNumber."""
        fn = self._client.search_for_instances
        return self._search(
            "QIDO-RS instances", fn, _INSTANCE_KEYS, {}, study_instance_uid=study_uid, series_instance_uid=series_uid
        )  # fmt: skip

    # ------------------------------------------------------------------------------------------ retrieve
    def retrieve(self, study_uid: str, out_dir: PathLike, series_uids: Sequence[str] | None = None) -> list[Path]:
        """WADO-RS a study (or some of its series) into ``out_dir/{SeriesInstanceUID}/{SOPInstanceUID}.dcm``.

        The instances are requested in the standard's default transfer syntax (Explicit VR Little Endian; the server
        transcodes others, as a C-GET with uncompressed contexts does) and written atomically as received (data set
        and file meta information). An instance of another study than the one asked for is refused.

        Returns:
            The files written.

        Raises:
            DicomWebError: when the study is unknown, a series gives no instance, or a request fails.
        """
        series = list(series_uids or [s["SeriesInstanceUID"] for s in self.find_series(study_uid)])
        if not series:
            raise DicomWebError(f"{self.url}: study {study_uid} not found (QIDO-RS gave no series)")
        out = Path(out_dir)
        written: list[Path] = []
        for s in series:
            datasets = self._call(f"WADO-RS series {s}", self._client.iter_series, study_uid, s)
            if not datasets:
                raise DicomWebError(f"{self.url}: WADO-RS of series {s} of study {study_uid} gave no instance")
            for ds in datasets:
                if str(ds.get("StudyInstanceUID", "")) != str(study_uid):
                    raise DicomWebError(
                        f"{self.url}: WADO-RS of study {study_uid} returned an instance of study "
                        f"{ds.get('StudyInstanceUID')!r}"
                    )
                folder = safe_output_path(out, ds.get("SeriesInstanceUID"), what="SeriesInstanceUID")
                name = safe_output_path(folder, ds.get("SOPInstanceUID"), ".dcm", what="SOPInstanceUID")
                written.append(atomic_write(name, lambda tmp, ds=ds: ds.save_as(tmp, enforce_file_format=True)))
        logger.info(f"retrieved {len(written)} instance(s) of {len(series)} series from {self.url} (WADO-RS)")
        return written

    def get_study(self, study_uid: str, out_dir: PathLike, series_uids: Sequence[str] | None = None) -> list[Path]:
        """The same as :meth:`retrieve` (the name of the DIMSE client's C-GET)."""
        return self.retrieve(study_uid, out_dir, series_uids=series_uids)

    # ---------------------------------------------------------------------------------------------- store
    def store(self, files: Iterable[PathLike]) -> list[str]:
        """STOW-RS every file (read whole; ``STORE_BATCH`` instances per request).

        Returns:
            The SOPInstanceUIDs stored.

        Raises:
            FileNotFoundError: for a missing file.
            ValueError: for a file that is not DICOM (naming it).
            DicomWebError: when a request fails or the service refuses an instance (naming it and the reason).
        """
        paths = [Path(f) for f in files]
        datasets = []
        for p in paths:  # check every file before sending any
            if not p.is_file():
                raise FileNotFoundError(f"{p}: file to store does not exist")
            try:
                ds = pydicom.dcmread(p)
            except (InvalidDicomError, OSError) as e:
                raise ValueError(f"{p}: not a readable DICOM file ({e})") from e
            if not ds.get("SOPInstanceUID") or not ds.get("SOPClassUID"):
                raise ValueError(f"{p}: no SOPInstanceUID / SOPClassUID, cannot be stored")
            datasets.append((p, ds))
        stored: list[str] = []
        for start in range(0, len(datasets), STORE_BATCH):
            batch = datasets[start : start + STORE_BATCH]
            answer = self._call("STOW-RS", self._client.store_instances, [ds for _, ds in batch])
            by_uid = {str(ds.SOPInstanceUID): p for p, ds in batch}
            failed = list(answer.get("FailedSOPSequence", []) or []) if answer is not None else []
            if failed:
                item = failed[0]
                uid = str(item.get("ReferencedSOPInstanceUID", ""))
                reason = item.get("FailureReason")
                code = f"failure reason 0x{int(reason):04X}" if reason is not None else "no failure reason"
                raise DicomWebError(
                    f"{by_uid.get(uid, uid)}: STOW-RS to {self.url} refused {len(failed)} instance(s) ({code})"
                )
            accepted = {str(i.ReferencedSOPInstanceUID) for i in (answer.get("ReferencedSOPSequence", []) or [])}
            missing = sorted(set(by_uid) - accepted) if answer is not None else []
            if missing:
                raise DicomWebError(
                    f"{by_uid[missing[0]]}: STOW-RS to {self.url} did not confirm {len(missing)} instance(s)"
                )
            stored += [str(ds.SOPInstanceUID) for _, ds in batch]
        logger.info(f"stored {len(stored)} instance(s) in {self.url} (STOW-RS)")
        return stored


def make_client(
    target: str,
    calling_aet: str = "MEDMONAI",
    move_port: int | None = None,
    timeout: float = 30.0,
    username: str | None = None,
    ca_bundle: PathLike | None = None,
) -> PacsClient | DicomWebClient:
    """A :class:`DicomWebClient` for an ``http(s)://`` URL, else a DIMSE :class:`PacsClient` for ``AET@HOST:PORT``.

    DICOMweb credentials come from the environment, never from a command line: with ``username``, the password is
    ``$MEDMONAI_DICOMWEB_PASSWORD``; without, a bearer token is ``$MEDMONAI_DICOMWEB_TOKEN`` when set.
    """
    if not is_dicomweb_url(target):
        return PacsClient.from_node(target, calling_aet=calling_aet, timeout=timeout, move_port=move_port)
    if move_port:
        raise ValueError(f"{target}: C-MOVE (--move-port) is DIMSE only; a DICOMweb service is read with WADO-RS")
    password = os.environ.get(PASSWORD_ENV) if username else None
    if username and password is None:
        raise ValueError(f"DICOMweb user {username!r}: set the password in ${PASSWORD_ENV}")
    token = None if username else (os.environ.get(TOKEN_ENV) or None)
    return DicomWebClient(
        target, timeout=timeout, username=username, password=password, token=token, ca_bundle=ca_bundle
    )
