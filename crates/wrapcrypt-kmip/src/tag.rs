//! The KMIP 1.2 tags this client uses (specification section 9.1.3.1).

use crate::ttlv::Tag;

pub const ACTIVATION_DATE: Tag = Tag(0x420001);
pub const ATTRIBUTE: Tag = Tag(0x420008);
pub const ATTRIBUTE_INDEX: Tag = Tag(0x420009);
pub const ATTRIBUTE_NAME: Tag = Tag(0x42000A);
pub const ATTRIBUTE_VALUE: Tag = Tag(0x42000B);
pub const BATCH_COUNT: Tag = Tag(0x42000D);
pub const BATCH_ITEM: Tag = Tag(0x42000F);
pub const COMPROMISE_OCCURRENCE_DATE: Tag = Tag(0x420021);
pub const CRYPTOGRAPHIC_ALGORITHM: Tag = Tag(0x420028);
pub const CRYPTOGRAPHIC_LENGTH: Tag = Tag(0x42002A);
pub const CRYPTOGRAPHIC_USAGE_MASK: Tag = Tag(0x42002C);
pub const KEY_BLOCK: Tag = Tag(0x420040);
pub const KEY_FORMAT_TYPE: Tag = Tag(0x420042);
pub const KEY_MATERIAL: Tag = Tag(0x420043);
pub const KEY_VALUE: Tag = Tag(0x420045);
pub const MAXIMUM_ITEMS: Tag = Tag(0x42004F);
pub const NAME: Tag = Tag(0x420053);
pub const NAME_TYPE: Tag = Tag(0x420054);
pub const NAME_VALUE: Tag = Tag(0x420055);
pub const OBJECT_GROUP: Tag = Tag(0x420056);
pub const OBJECT_TYPE: Tag = Tag(0x420057);
pub const OPERATION: Tag = Tag(0x42005C);
pub const PROTOCOL_VERSION: Tag = Tag(0x420069);
pub const PROTOCOL_VERSION_MAJOR: Tag = Tag(0x42006A);
pub const PROTOCOL_VERSION_MINOR: Tag = Tag(0x42006B);
pub const REQUEST_HEADER: Tag = Tag(0x420077);
pub const REQUEST_MESSAGE: Tag = Tag(0x420078);
pub const REQUEST_PAYLOAD: Tag = Tag(0x420079);
pub const RESPONSE_HEADER: Tag = Tag(0x42007A);
pub const RESPONSE_MESSAGE: Tag = Tag(0x42007B);
pub const RESPONSE_PAYLOAD: Tag = Tag(0x42007C);
pub const RESULT_MESSAGE: Tag = Tag(0x42007D);
pub const RESULT_REASON: Tag = Tag(0x42007E);
pub const RESULT_STATUS: Tag = Tag(0x42007F);
pub const REVOCATION_MESSAGE: Tag = Tag(0x420080);
pub const REVOCATION_REASON: Tag = Tag(0x420081);
pub const REVOCATION_REASON_CODE: Tag = Tag(0x420082);
pub const STATE: Tag = Tag(0x42008D);
pub const SYMMETRIC_KEY: Tag = Tag(0x42008F);
pub const TEMPLATE_ATTRIBUTE: Tag = Tag(0x420091);
pub const TIME_STAMP: Tag = Tag(0x420092);
pub const UNIQUE_IDENTIFIER: Tag = Tag(0x420094);
pub const BLOCK_CIPHER_MODE: Tag = Tag(0x420011);
pub const CRYPTOGRAPHIC_PARAMETERS: Tag = Tag(0x42002B);
pub const IV_COUNTER_NONCE: Tag = Tag(0x42003D);
pub const PADDING_METHOD: Tag = Tag(0x42005F);
pub const DATA: Tag = Tag(0x4200C2);
pub const TAG_LENGTH: Tag = Tag(0x4200CE);
/// KMIP 1.4.
pub const AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA: Tag = Tag(0x4200FE);
/// KMIP 1.4.
pub const AUTHENTICATED_ENCRYPTION_TAG: Tag = Tag(0x4200FF);
pub const BATCH_ERROR_CONTINUATION_OPTION: Tag = Tag(0x42000E);
pub const UNIQUE_BATCH_ITEM_ID: Tag = Tag(0x420093);
