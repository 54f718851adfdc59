// Filestore CDN edge, njs half: signs nginx's requests to the S3 origin (AWS Signature Version 4)
// and hands the secure_link secret to nginx, both from the environment of the nginx master.
//
// Why nginx signs at all: the object store never serves anything anonymously (its filer HTTP port
// demands JWTs only SeaweedFS mints), so the edge reads through the S3 API with a read-only
// identity of its own, as CloudFront does with origin access control and as NGINX's own S3
// gateway does. See filestore-cdn.conf.template and README.md ("Public files and the CDN").
//
// Environment (kept by the `env` directives of the template; never written into the config):
//   FILESTORE_CDN_NGINX_SECRET        the secure_link secret the download service signs with
//   FILESTORE_CDN_ORIGIN_ACCESS_KEY   S3 identity with Read on the bucket, nothing else
//   FILESTORE_CDN_ORIGIN_SECRET_KEY

import crypto from 'crypto';

const ALGORITHM = 'AWS4-HMAC-SHA256';
const SIGNED_HEADERS = 'host;x-amz-content-sha256;x-amz-date';
// SHA-256 of the empty body: every origin request is a GET.
const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
const MIN_SECRET_LENGTH = 16;

function required(name) {
    const value = process.env[name];
    if (!value) {
        // The request then goes out unsigned, and storage refuses anonymous reads.
        throw new Error(name + ' is not set in the environment of nginx');
    }
    return value;
}

// The secure_link secret, or "" when it is missing or short, which the configuration answers with
// 503. Throwing would not do: nginx then hashes an empty secret, and anybody could forge links.
function secureLinkSecret(r) {
    const secret = process.env.FILESTORE_CDN_NGINX_SECRET || '';
    if (secret.length < MIN_SECRET_LENGTH) {
        r.error('FILESTORE_CDN_NGINX_SECRET is not set or shorter than ' + MIN_SECRET_LENGTH + ' characters');
        return '';
    }
    return secret;
}

// RFC 3986 percent-encoding of one path segment, as SigV4's canonical URI wants it (S3 encodes once).
function encodeSegment(segment) {
    return encodeURIComponent(segment).replace(/[!'()*]/g, function (c) {
        return '%' + c.charCodeAt(0).toString(16).toUpperCase();
    });
}

// The object's path on the origin: /<bucket>/<key>, where the key is nginx's $uri (decoded and
// normalised: the very string secure_link checked), so a link can only ever name the object it signs.
function originPath(r) {
    const key = r.variables.uri.split('/').map(encodeSegment).join('/');
    return '/' + encodeSegment(r.variables.s3_bucket) + key;
}

// nginx's cached clock ($msec) does not move while one request's upstream headers are built, so
// x-amz-date and the signature computed from it always agree, even across a second boundary.
function amzDate(r) {
    const seconds = Math.floor(parseFloat(r.variables.msec));
    return new Date(seconds * 1000).toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
}

function hmac(key, data) {
    return crypto.createHmac('sha256', key).update(data).digest();
}

function authorization(r) {
    const accessKey = required('FILESTORE_CDN_ORIGIN_ACCESS_KEY');
    const secretKey = required('FILESTORE_CDN_ORIGIN_SECRET_KEY');
    const date = amzDate(r);
    const day = date.slice(0, 8);
    const region = r.variables.s3_region;
    const canonicalRequest = [
        'GET',
        originPath(r),
        '',
        'host:' + r.variables.s3_host,
        'x-amz-content-sha256:' + EMPTY_SHA256,
        'x-amz-date:' + date,
        '',
        SIGNED_HEADERS,
        EMPTY_SHA256,
    ].join('\n');
    const scope = [day, region, 's3', 'aws4_request'].join('/');
    const stringToSign = [
        ALGORITHM,
        date,
        scope,
        crypto.createHash('sha256').update(canonicalRequest).digest('hex'),
    ].join('\n');
    const signingKey = hmac(hmac(hmac(hmac('AWS4' + secretKey, day), region), 's3'), 'aws4_request');
    const signature = crypto.createHmac('sha256', signingKey).update(stringToSign).digest('hex');
    return ALGORITHM + ' Credential=' + accessKey + '/' + scope + ', SignedHeaders=' + SIGNED_HEADERS +
        ', Signature=' + signature;
}

function payloadHash(r) {
    return EMPTY_SHA256;
}

export default { secureLinkSecret, originPath, amzDate, authorization, payloadHash };
