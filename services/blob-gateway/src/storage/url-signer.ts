import {
  BlobSASPermissions,
  type BlobServiceClient,
  generateBlobSASQueryParameters,
  type SASProtocol,
  type StorageSharedKeyCredential,
  type UserDelegationKey,
} from "@azure/storage-blob";

/** What a signed URL may do: create and write one blob (no read, no delete, no list), or read it. */
export type SasAccess = "create-write" | "read";

/** Headers a read URL makes storage answer with (the SAS rscd, rsct and rscc overrides, part of the signature). */
export interface ResponseHeaders {
  contentDisposition?: string;
  contentType?: string;
  cacheControl?: string;
}

export interface SignRequest {
  container: string;
  path: string;
  access: SasAccess;
  startsOn: Date;
  expiresOn: Date;
  responseHeaders?: ResponseHeaders;
}

/** Signs one blob's URL; the query string it returns grants nothing beyond that blob. */
export interface UrlSigner {
  readonly kind: "shared-key" | "user-delegation";
  sign(req: SignRequest): Promise<string>;
}

const PERMISSIONS: Record<SasAccess, string> = { "create-write": "cw", read: "r" };

function signatureValues(req: SignRequest, protocol: SASProtocol) {
  return {
    containerName: req.container,
    blobName: req.path,
    permissions: BlobSASPermissions.parse(PERMISSIONS[req.access]),
    startsOn: req.startsOn,
    expiresOn: req.expiresOn,
    protocol,
    contentDisposition: req.responseHeaders?.contentDisposition,
    contentType: req.responseHeaders?.contentType,
    cacheControl: req.responseHeaders?.cacheControl,
  };
}

/** Account-key signing (service SAS, sr=b). */
export class SharedKeySigner implements UrlSigner {
  readonly kind = "shared-key";
  constructor(
    private readonly credential: StorageSharedKeyCredential,
    private readonly protocol: SASProtocol,
  ) {}

  async sign(req: SignRequest): Promise<string> {
    return generateBlobSASQueryParameters(signatureValues(req, this.protocol), this.credential).toString();
  }
}

const DELEGATION_KEY_LIFETIME_MS = 7 * 24 * 3600_000;

/**
 * User delegation SAS: signed with a key Azure AD hands to the gateway's
 * identity, so no account key exists anywhere. One key is kept and renewed
 * when a URL would outlive it. Not exercised by the tests (Azurite needs
 * OAuth over https for it).
 */
export class UserDelegationSigner implements UrlSigner {
  readonly kind = "user-delegation";
  private key: Promise<UserDelegationKey> | undefined;

  constructor(
    private readonly service: BlobServiceClient,
    private readonly accountName: string,
    private readonly protocol: SASProtocol,
    private readonly now: () => Date,
  ) {}

  async sign(req: SignRequest): Promise<string> {
    const key = await this.delegationKey(req.expiresOn);
    return generateBlobSASQueryParameters(signatureValues(req, this.protocol), key, this.accountName).toString();
  }

  private async delegationKey(validUntil: Date): Promise<UserDelegationKey> {
    const current = await this.key?.catch(() => undefined);
    if (current && current.signedExpiresOn.getTime() >= validUntil.getTime()) return current;
    const startsOn = new Date(this.now().getTime() - 5 * 60_000);
    const expiresOn = new Date(startsOn.getTime() + DELEGATION_KEY_LIFETIME_MS);
    this.key = this.service.getUserDelegationKey(startsOn, expiresOn);
    return this.key;
  }
}
