//! The image library (`easel::uploads::Library`) on a SQLite store and a local folder, with
//! real files built in the test: what is accepted, what is refused and why, what is stored
//! (no EXIF, orientation applied, sizes), dedupe, ownership and the collector.
//! The same library against S3 is in `tests/storage.rs`; the HTTP routes in `tests/uploads_api.rs`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use common::images::*;
use easel::base::clock::now_millis;
use easel::base::image::{
    ImageDeleteOutcome, ImageListQuery, ImageObject, ImageOwner, ObjectState,
};
use easel::storage::urls::{ResultLinks, UrlSigner};
use easel::storage::{ObjectStore, ObjectStoreBackend};
use easel::store::sqlite::SqliteStore;
use easel::store::Store;
use easel::uploads::{Library, Upload, UploadError, UploadsConfig};
use image::{DynamicImage, RgbImage};

struct Lib {
    library: Library,
    store: Arc<dyn Store>,
    objects: Arc<dyn ObjectStore>,
    dir: tempfile::TempDir,
}

impl Lib {
    fn new() -> Lib {
        Lib::with(|_| {})
    }

    fn with(tweak: impl FnOnce(&mut UploadsConfig)) -> Lib {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.path().join("easel.db")).expect("sqlite"));
        let objects: Arc<dyn ObjectStore> =
            Arc::new(ObjectStoreBackend::local(&dir.path().join("objects")).expect("folder"));
        let links = ResultLinks::signed(UrlSigner::new(b"k", "http://127.0.0.1:9", None, 600));
        let mut config = UploadsConfig::default();
        tweak(&mut config);
        Lib {
            library: Library::new(store.clone(), objects.clone(), links, config),
            store,
            objects,
            dir,
        }
    }

    async fn upload(
        &self,
        owner: &ImageOwner,
        bytes: Vec<u8>,
    ) -> Result<easel::base::image::ImageRecord, UploadError> {
        self.library
            .upload(owner, Upload::new(Bytes::from(bytes)))
            .await
    }

    async fn stored(&self, key: &str) -> RgbImage {
        let object = self.objects.get(key).await.expect("stored object");
        assert!(
            object.bytes.starts_with(&[0xff, 0xd8, 0xff]),
            "stored as JPEG"
        );
        image::load_from_memory_with_format(&object.bytes, image::ImageFormat::Jpeg)
            .expect("stored JPEG decodes")
            .into_rgb8()
    }

    /// Every file under the objects folder.
    fn files(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        walk(&self.dir.path().join("objects"), &mut found);
        found
    }
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, found);
        } else {
            found.push(path);
        }
    }
}

fn tenant(id: &str) -> ImageOwner {
    ImageOwner::tenant(id)
}

#[tokio::test]
async fn png_is_stored_as_jpeg_with_a_thumbnail_and_its_facts() {
    let lib = Lib::new();
    let bytes = png(3000, 1000);
    let record = lib
        .upload(&tenant("t1"), bytes.clone())
        .await
        .expect("upload");
    let object = &record.object;
    assert_eq!((object.width, object.height), (3000, 1000), "original size");
    assert_eq!(object.mime, "image/jpeg");
    assert_eq!(object.state, ObjectState::Ready);
    assert_eq!(object.holders, 1);
    assert_eq!(record.ref_count, 0, "refCount starts at 0");
    let hash = <sha2::Sha256 as sha2::Digest>::digest(&bytes);
    assert_eq!(object.content_hash, hex::encode(hash));
    assert!(
        object.key.starts_with("uploads/t1/"),
        "tenant-scoped key: {}",
        object.key
    );
    let stored = lib.stored(&object.key).await;
    assert_eq!(stored.dimensions(), (2048, 683), "fit inside 2048x2048");
    let raw = lib.objects.get(&object.key).await.expect("get").bytes;
    assert_eq!(
        object.size,
        raw.len() as u64,
        "size is the stored byte length"
    );
    let thumb = lib.stored(&object.thumb_key).await;
    assert_eq!(thumb.dimensions(), (300, 100), "thumbnail inside 300x300");
    assert!(near(color_at(&thumb, 10, 50), RED, 40));
    assert!(near(color_at(&thumb, 290, 50), BLUE, 40));
}

#[tokio::test]
async fn small_images_are_never_enlarged() {
    let lib = Lib::new();
    let record = lib
        .upload(&tenant("t1"), png(64, 48))
        .await
        .expect("upload");
    assert_eq!(lib.stored(&record.object.key).await.dimensions(), (64, 48));
    assert_eq!(
        lib.stored(&record.object.thumb_key).await.dimensions(),
        (64, 48)
    );
}

#[tokio::test]
async fn jpeg_exif_and_gps_are_stripped_after_the_orientation_is_applied() {
    let lib = Lib::new();
    let upload = camera_jpeg(400, 200);
    // The fixture really carries GPS and orientation 6.
    let exif = exif::Reader::new()
        .read_from_container(&mut std::io::Cursor::new(&upload))
        .expect("fixture EXIF parses");
    assert!(exif
        .get_field(exif::Tag::GPSLatitude, exif::In::PRIMARY)
        .is_some());
    let orientation = exif
        .get_field(exif::Tag::Orientation, exif::In::PRIMARY)
        .and_then(|f| f.value.get_uint(0));
    assert_eq!(orientation, Some(6));
    assert!(has_exif(&upload), "the check sees the fixture's EXIF");

    let record = lib.upload(&tenant("t1"), upload).await.expect("upload");
    assert_eq!(
        (record.object.width, record.object.height),
        (200, 400),
        "rotated"
    );
    for key in [&record.object.key, &record.object.thumb_key] {
        let raw = lib.objects.get(key).await.expect("get").bytes;
        assert!(!has_exif(&raw), "{key} carries EXIF");
        assert!(!raw.windows(4).any(|w| w == b"GPS\0"));
    }
    // Rotated 90 degrees clockwise: the left (red) half is now on top.
    let stored = lib.stored(&record.object.key).await;
    assert_eq!(stored.dimensions(), (200, 400));
    assert!(
        near(color_at(&stored, 100, 50), RED, 40),
        "{:?}",
        color_at(&stored, 100, 50)
    );
    assert!(near(color_at(&stored, 100, 350), BLUE, 40));
}

#[tokio::test]
async fn webp_transparent_png_and_the_first_frame_of_an_animated_gif() {
    let lib = Lib::new();
    let owner = tenant("t1");
    let webp = lib.upload(&owner, webp(120, 80)).await.expect("webp");
    let stored = lib.stored(&webp.object.key).await;
    assert_eq!(stored.dimensions(), (120, 80));
    assert!(near(color_at(&stored, 10, 40), RED, 40));

    let gif = lib.upload(&owner, animated_gif(50, 30)).await.expect("gif");
    let stored = lib.stored(&gif.object.key).await;
    assert_eq!(stored.dimensions(), (50, 30));
    assert!(near(color_at(&stored, 25, 15), RED, 40), "first frame kept");

    let clear = lib
        .upload(&owner, transparent_png(40, 20))
        .await
        .expect("png");
    let stored = lib.stored(&clear.object.key).await;
    assert!(
        near(color_at(&stored, 5, 10), [255, 255, 255], 10),
        "laid on white"
    );
}

#[tokio::test]
async fn the_type_comes_from_the_bytes_not_the_name() {
    let lib = Lib::new();
    let owner = tenant("t1");
    let mut renamed = Upload::new(Bytes::from(png(32, 32)));
    renamed.original_name = Some("holiday.jpg".into());
    let record = lib
        .library
        .upload(&owner, renamed)
        .await
        .expect("a PNG named .jpg");
    assert_eq!(record.original_name.as_deref(), Some("holiday.jpg"));

    let mut text = Upload::new(Bytes::from_static(b"<html>not an image</html>"));
    text.original_name = Some("cat.png".into());
    let err = lib.library.upload(&owner, text).await.expect_err("text");
    assert_eq!(err.reason(), "UNSUPPORTED_TYPE");
    let heic = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic".to_vec();
    let err = lib.upload(&owner, heic).await.expect_err("heic");
    assert!(err.to_string().contains("HEIC"), "{err}");
}

#[tokio::test]
async fn broken_empty_oversized_and_bomb_files_are_refused_with_their_reason() {
    let lib = Lib::with(|c| c.max_bytes = 300_000);
    let owner = tenant("t1");
    let whole = png(200, 200);
    let err = lib
        .upload(&owner, whole[..whole.len() / 2].to_vec())
        .await
        .expect_err("truncated");
    assert_eq!(err.reason(), "CORRUPT_IMAGE", "{err}");
    let err = lib
        .upload(&owner, whole[..30].to_vec())
        .await
        .expect_err("header cut");
    assert_eq!(err.reason(), "CORRUPT_IMAGE", "{err}");

    assert_eq!(
        lib.upload(&owner, Vec::new()).await.expect_err("empty"),
        UploadError::Empty
    );

    let bomb = declared_png(20_000, 20_000);
    assert!(bomb.len() < 100, "a header only: {} bytes", bomb.len());
    let err = lib.upload(&owner, bomb).await.expect_err("bomb");
    assert_eq!(
        err,
        UploadError::TooManyPixels {
            width: 20_000,
            height: 20_000,
            limit: 50_000_000
        }
    );
    assert!(err.is_too_large());

    let big = encode(
        &DynamicImage::ImageRgb8(noise(400, 400, 7)),
        image::ImageFormat::Png,
    );
    assert!(big.len() > 300_000);
    let err = lib
        .upload(&owner, big)
        .await
        .expect_err("over the byte limit");
    assert!(
        matches!(err, UploadError::TooLarge { limit: 300_000, .. }),
        "{err}"
    );
    assert!(lib.files().is_empty(), "nothing stored for refused files");
}

#[tokio::test]
async fn a_batch_reports_each_file_in_order() {
    let lib = Lib::new();
    let owner = tenant("t1");
    let files = vec![
        png(20, 20),
        Vec::new(),
        jpeg(&halves(30, 30)),
        b"GIF89a\x01".to_vec(),
        webp(10, 10),
    ];
    let uploads = files
        .into_iter()
        .map(|b| Upload::new(Bytes::from(b)))
        .collect();
    let results = lib.library.upload_many(&owner, uploads).await;
    let verdicts: Vec<Result<u32, &str>> = results
        .iter()
        .map(|r| {
            r.as_ref()
                .map(|rec| rec.object.width)
                .map_err(|e| e.reason())
        })
        .collect();
    assert_eq!(
        verdicts,
        vec![
            Ok(20),
            Err("EMPTY_FILE"),
            Ok(30),
            Err("CORRUPT_IMAGE"),
            Ok(10)
        ]
    );
}

#[tokio::test]
async fn the_same_bytes_share_one_object_until_the_last_record_goes() {
    let lib = Lib::new();
    let owner = ImageOwner::user("t1", "u1");
    let bytes = png(64, 64);
    let first = lib.upload(&owner, bytes.clone()).await.expect("first");
    let second = lib.upload(&owner, bytes.clone()).await.expect("second");
    assert_ne!(first.id, second.id, "two records");
    assert_eq!(first.object.id, second.object.id, "one object");
    assert_eq!(second.object.holders, 2);
    assert_eq!(lib.files().len(), 2, "one image and one thumbnail");

    // Another tenant's same bytes never share.
    let other = lib.upload(&tenant("t2"), bytes.clone()).await.expect("t2");
    assert_ne!(other.object.id, first.object.id);
    assert_ne!(other.object.key, first.object.key);
    assert_eq!(lib.files().len(), 4);

    let gone = lib.library.delete(&owner, &first.id).await.expect("delete");
    assert_eq!(gone, ImageDeleteOutcome::Deleted(None));
    assert_eq!(
        lib.files().len(),
        4,
        "the second record still holds the object"
    );
    lib.library
        .get(&owner, &second.id)
        .await
        .expect("still there");

    let gone = lib
        .library
        .delete(&owner, &second.id)
        .await
        .expect("delete");
    assert!(matches!(gone, ImageDeleteOutcome::Deleted(Some(_))));
    assert_eq!(
        lib.files().len(),
        2,
        "the last record took the object with it"
    );
    assert!(!lib.objects.exists(&first.object.key).await.expect("exists"));
    assert!(lib.objects.exists(&other.object.key).await.expect("exists"));

    // Uploaded again: a new object.
    let again = lib.upload(&owner, bytes).await.expect("again");
    assert_ne!(again.object.id, first.object.id);
    assert!(lib.objects.exists(&again.object.key).await.expect("exists"));
}

#[tokio::test]
async fn concurrent_uploads_of_the_same_bytes_keep_one_object() {
    let lib = Lib::new();
    let owner = tenant("t1");
    let bytes = Bytes::from(png(300, 200));
    let uploads = (0..6).map(|_| lib.library.upload(&owner, Upload::new(bytes.clone())));
    let records: Vec<_> = futures::future::join_all(uploads)
        .await
        .into_iter()
        .map(|r| r.expect("upload"))
        .collect();
    let object = &records[0].object.id;
    assert!(records.iter().all(|r| &r.object.id == object), "one object");
    assert_eq!(lib.files().len(), 2, "losers' files deleted");
    let (_, total) = lib
        .library
        .list(ImageListQuery {
            owner: owner.clone(),
            session_id: None,
            kind: None,
            limit: 100,
            offset: 0,
        })
        .await
        .expect("list");
    assert_eq!(total, 6);
}

#[tokio::test]
async fn another_owner_gets_not_found_everywhere() {
    let lib = Lib::new();
    let alice = ImageOwner::user("t1", "alice");
    let record = lib.upload(&alice, png(16, 16)).await.expect("upload");
    for stranger in [
        ImageOwner::user("t1", "bob"),
        ImageOwner::tenant("t1"),
        ImageOwner::user("t2", "alice"),
    ] {
        assert_eq!(
            lib.library
                .get(&stranger, &record.id)
                .await
                .expect_err("get"),
            UploadError::NotFound
        );
        assert_eq!(
            lib.library
                .load(&stranger, &record.id)
                .await
                .expect_err("load"),
            UploadError::NotFound
        );
        assert_eq!(
            lib.library
                .delete(&stranger, &record.id)
                .await
                .expect("delete"),
            ImageDeleteOutcome::NotFound
        );
        assert_eq!(
            lib.library
                .retain(&stranger, std::slice::from_ref(&record.id))
                .await
                .expect("retain"),
            vec![record.id.clone()]
        );
    }
    let mine = lib.library.get(&alice, &record.id).await.expect("mine");
    assert_eq!(mine.ref_count, 0, "strangers changed nothing");
    let loaded = lib.library.load(&alice, &record.id).await.expect("load");
    assert_eq!(loaded.mime, "image/jpeg");
}

#[tokio::test]
async fn a_used_image_cannot_be_deleted_until_released() {
    let lib = Lib::new();
    let owner = tenant("t1");
    let a = lib.upload(&owner, png(10, 10)).await.expect("a");
    let b = lib.upload(&owner, png(12, 12)).await.expect("b");
    let ids = vec![a.id.clone(), b.id.clone()];
    assert!(lib
        .library
        .retain(&owner, &ids)
        .await
        .expect("retain")
        .is_empty());
    assert_eq!(
        lib.library.get(&owner, &a.id).await.expect("a").ref_count,
        1
    );
    // All or nothing: an unknown id changes no count.
    let missing = lib
        .library
        .retain(&owner, &[a.id.clone(), "img_nope".into()])
        .await
        .expect("retain");
    assert_eq!(missing, vec!["img_nope".to_owned()]);
    assert_eq!(
        lib.library.get(&owner, &a.id).await.expect("a").ref_count,
        1
    );

    assert_eq!(
        lib.library.delete(&owner, &a.id).await.expect("delete"),
        ImageDeleteOutcome::Referenced(1)
    );
    assert!(lib
        .library
        .release(&owner, &ids)
        .await
        .expect("release")
        .is_empty());
    assert!(lib
        .library
        .release(&owner, &ids)
        .await
        .expect("release")
        .is_empty());
    assert_eq!(
        lib.library.get(&owner, &a.id).await.expect("a").ref_count,
        0,
        "never below 0"
    );
    assert!(matches!(
        lib.library.delete(&owner, &a.id).await.expect("delete"),
        ImageDeleteOutcome::Deleted(Some(_))
    ));
}

#[tokio::test]
async fn the_collector_removes_what_a_crash_left() {
    let lib = Lib::with(|c| c.orphan_after_secs = 60);
    // An upload that died after writing its files, before its record.
    let now = now_millis();
    let orphan = ImageObject {
        id: "obj_orphan".into(),
        tenant_id: "t1".into(),
        content_hash: "ab".repeat(32),
        key: "uploads/t1/ab/orphan.jpg".into(),
        thumb_key: "uploads/t1/ab/orphan_thumb.jpg".into(),
        mime: "image/jpeg".into(),
        width: 1,
        height: 1,
        size: 3,
        state: ObjectState::Pending,
        holders: 0,
        created_at: now,
    };
    lib.store
        .image_object_begin(orphan.clone())
        .await
        .expect("begin");
    for key in [&orphan.key, &orphan.thumb_key] {
        lib.objects
            .put(key, Bytes::from_static(b"\xff\xd8\xff"), "image/jpeg")
            .await
            .expect("put");
    }
    let kept = lib
        .upload(&tenant("t1"), png(8, 8))
        .await
        .expect("a live image");

    let early = lib.library.collect(now + 30_000).await.expect("collect");
    assert_eq!(early.objects, 0, "still within its upload's grace");
    assert_eq!(lib.files().len(), 4);

    let late = lib.library.collect(now + 61_000).await.expect("collect");
    assert_eq!(late.objects, 1);
    assert_eq!(lib.files().len(), 2, "only the live image's files remain");
    assert!(lib.objects.exists(&kept.object.key).await.expect("exists"));
    assert!(
        !lib.store
            .image_object_forget(&orphan.id)
            .await
            .expect("forget"),
        "already forgotten"
    );
}
