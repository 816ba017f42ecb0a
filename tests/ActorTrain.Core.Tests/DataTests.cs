using System.Buffers.Binary;
using System.IO.Compression;
using ActorTrain.Core.Data;

namespace ActorTrain.Core.Tests;

public class SyntheticDataTests
{
    [Fact]
    public void Same_seed_gives_identical_rows_and_another_seed_does_not()
    {
        var a = SyntheticData.Blobs(200, 5, 3, 2.0, 11);
        var b = SyntheticData.Blobs(200, 5, 3, 2.0, 11);
        var c = SyntheticData.Blobs(200, 5, 3, 2.0, 12);
        Assert.Equal(a.Features, b.Features);
        Assert.Equal(a.Labels, b.Labels);
        Assert.NotEqual(a.Features, c.Features);
    }

    [Fact]
    public void Blobs_are_balanced_and_separated_as_asked()
    {
        var d = SyntheticData.Blobs(3000, 2, 3, 10.0, 3);
        Assert.All(Enumerable.Range(0, 3), k => Assert.Equal(1000, d.Labels!.Count(y => y == k)));
        // within-class spread is N(0, I): per-coordinate variance about 1
        var xs = Enumerable.Range(0, d.Count).Where(i => d.Labels![i] == 0).Select(i => (double)d.Features[2 * i]).ToArray();
        double mean = xs.Average();
        Assert.Equal(1.0, xs.Select(v => (v - mean) * (v - mean)).Average(), 0.15);
    }

    [Fact]
    public void Linear_data_follows_the_returned_weights_up_to_the_noise()
    {
        var d = SyntheticData.Linear(2000, 3, 1, 0.1, 9, out var w);
        double sq = 0;
        for (int i = 0; i < d.Count; i++)
        {
            double pred = w[3];
            for (int f = 0; f < 3; f++) pred += d.Features[i * 3 + f] * w[f];
            sq += (d.Targets![i] - pred) * (d.Targets[i] - pred);
        }
        Assert.Equal(0.01, sq / d.Count, 0.002);
    }

    [Fact]
    public void Bad_generator_arguments_are_user_errors() =>
        Assert.Contains("separation", Assert.Throws<ActorTrainException>(() => SyntheticData.Blobs(10, 2, 2, 0, 1)).Message);
}

public class PartitionAndBatchTests
{
    private static Dataset Numbered(int n)
    {
        // feature = row index, so rows can be traced through shuffles
        return new Dataset("numbered", Enumerable.Range(0, n).Select(i => (float)i).ToArray(), 1, new int[n], 2);
    }

    [Fact]
    public void Partition_is_disjoint_complete_balanced_and_seeded()
    {
        var d = Numbered(103);
        var parts = d.Partition(4, 77);
        Assert.Equal([26, 26, 26, 25], parts.Select(p => p.Count));
        var all = parts.SelectMany(p => p.Features).Select(v => (int)v).ToList();
        Assert.Equal(Enumerable.Range(0, 103), all.Order());
        Assert.Equal(parts[2].Features, d.Partition(4, 77)[2].Features);
        Assert.NotEqual(parts[0].Features, d.Partition(4, 78)[0].Features);
        Assert.Throws<ActorTrainException>(() => d.Partition(104, 1));
    }

    [Fact]
    public void Split_separates_train_and_test_without_overlap()
    {
        var (train, test) = Numbered(50).Split(0.2, 5);
        Assert.Equal((40, 10), (train.Count, test.Count));
        Assert.Empty(train.Features.Intersect(test.Features));
    }

    [Fact]
    public void Full_batch_returns_every_row_in_order_each_step()
    {
        var d = Numbered(10);
        var it = new MiniBatchIterator(d, 0, 1);
        var buf = it.CreateBuffer();
        for (int step = 0; step < 3; step++)
        {
            it.Next(buf);
            Assert.Equal(10, buf.Count);
            Assert.Equal(Enumerable.Range(0, 10).Select(i => (float)i), buf.Features.Take(10));
            Assert.Equal(step, it.Epoch);
        }
        Assert.True(it.IsFullBatch);
    }

    [Fact]
    public void Batch_of_one_visits_each_row_once_per_epoch_in_a_seeded_order()
    {
        var d = Numbered(7);
        var it = new MiniBatchIterator(d, 1, 42);
        var buf = it.CreateBuffer();
        var epoch0 = new List<float>();
        var epoch1 = new List<float>();
        for (int i = 0; i < 14; i++)
        {
            it.Next(buf);
            Assert.Equal(1, buf.Count);
            (i < 7 ? epoch0 : epoch1).Add(buf.Features[0]);
        }
        Assert.Equal(Enumerable.Range(0, 7).Select(i => (float)i), epoch0.Order());
        Assert.Equal(Enumerable.Range(0, 7).Select(i => (float)i), epoch1.Order());
        Assert.NotEqual(epoch0, epoch1);

        var again = new MiniBatchIterator(d, 1, 42);
        var first = new List<float>();
        for (int i = 0; i < 7; i++) { again.Next(buf); first.Add(buf.Features[0]); }
        Assert.Equal(epoch0, first);
    }

    [Fact]
    public void Last_batch_of_an_epoch_holds_the_remainder_and_seek_resumes()
    {
        var d = Numbered(10);
        var it = new MiniBatchIterator(d, 4, 3);
        var buf = it.CreateBuffer();
        it.Next(buf); it.Next(buf); it.Next(buf);
        Assert.Equal(2, buf.Count);
        Assert.Equal(3, it.BatchesPerEpoch);
        it.Next(buf);
        var expected = buf.Features.Take(4).ToArray();

        var resumed = new MiniBatchIterator(d, 4, 3);
        resumed.Seek(1, 0);
        resumed.Next(buf);
        Assert.Equal(expected, buf.Features.Take(4));
    }
}

public class IdxReaderTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("actortrain-idx-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    private static byte[] Idx(int[] dims, byte[] data)
    {
        var bytes = new byte[4 + 4 * dims.Length + data.Length];
        bytes[2] = 0x08;
        bytes[3] = (byte)dims.Length;
        for (int d = 0; d < dims.Length; d++) BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(4 + 4 * d), dims[d]);
        data.CopyTo(bytes, 4 + 4 * dims.Length);
        return bytes;
    }

    private string Write(string name, byte[] bytes, bool gzip = false)
    {
        string path = Path.Combine(_dir, name);
        if (!gzip) File.WriteAllBytes(path, bytes);
        else
        {
            using var f = File.Create(path);
            using var gz = new GZipStream(f, CompressionLevel.Fastest);
            gz.Write(bytes);
        }
        return path;
    }

    private void WriteMnistFolder(bool gzip)
    {
        string ext = gzip ? ".gz" : "";
        var pixels = new byte[3 * 2 * 2] { 0, 255, 51, 102, 0, 0, 0, 0, 255, 255, 255, 255 };
        Write("train-images-idx3-ubyte" + ext, Idx([3, 2, 2], pixels), gzip);
        Write("train-labels-idx1-ubyte" + ext, Idx([3], [2, 0, 1]), gzip);
        Write("t10k-images-idx3-ubyte" + ext, Idx([1, 2, 2], [255, 0, 0, 0]), gzip);
        Write("t10k-labels-idx1-ubyte" + ext, Idx([1], [1]), gzip);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Reads_raw_and_gzip_folders_with_unit_range_pixels(bool gzip)
    {
        WriteMnistFolder(gzip);
        var (train, test) = IdxReader.LoadMnistFolder(_dir, PixelNormalization.UnitRange);
        Assert.Equal((3, 4, 3), (train.Count, train.FeatureCount, train.Classes));
        Assert.Equal([0f, 1f, 51f / 255f, 102f / 255f], train.Features.Take(4));
        Assert.Equal([2, 0, 1], train.Labels!);
        Assert.Equal(1, test.Count);
    }

    [Fact]
    public void Standardisation_uses_the_training_mean_and_deviation_for_both_splits()
    {
        WriteMnistFolder(false);
        var (train, test) = IdxReader.LoadMnistFolder(_dir, PixelNormalization.Standardize);
        Assert.Equal(0.0, train.Features.Average(v => (double)v), 1e-6);
        Assert.Equal(1.0, Math.Sqrt(train.Features.Average(v => (double)v * v)), 1e-5);
        // the test split is mapped with the training statistics, not its own
        double[] trainPixels = [0, 1, 0.2, 0.4, 0, 0, 0, 0, 1, 1, 1, 1];
        double mean = trainPixels.Average();
        double std = Math.Sqrt(trainPixels.Average(v => v * v) - mean * mean);
        Assert.Equal((1 - mean) / std, test.Features[0], 1e-5);
        Assert.Equal((0 - mean) / std, test.Features[1], 1e-5);
    }

    [Fact]
    public void Truncated_file_names_the_file_and_the_shortfall()
    {
        var bytes = Idx([3, 2, 2], new byte[12]);
        string path = Write("short", bytes[..^5]);
        var e = Assert.Throws<DataFormatException>(() => IdxReader.Read(path));
        Assert.StartsWith(path, e.Message);
        Assert.Contains("truncated", e.Message);
    }

    [Fact]
    public void Wrong_magic_unsupported_type_and_corrupt_gzip_are_reported()
    {
        string text = Write("text", "hello world, not idx"u8.ToArray());
        Assert.Contains("not an IDX file", Assert.Throws<DataFormatException>(() => IdxReader.Read(text)).Message);

        var floats = Idx([1], [0, 0, 0, 0]);
        floats[2] = 0x0D;
        Assert.Contains("element type 0x0d", Assert.Throws<DataFormatException>(() => IdxReader.Read(Write("floats", floats))).Message);

        var gz = File.ReadAllBytes(Write("good.gz", Idx([4], [1, 2, 3, 4]), gzip: true));
        gz[^6] ^= 0xFF; // damage the CRC/length trailer
        gz[12] ^= 0xFF;
        string bad = Write("bad.gz", gz);
        Assert.Contains(bad, Assert.Throws<DataFormatException>(() => IdxReader.Read(bad)).Message);

        Assert.Contains("file not found", Assert.Throws<DataFormatException>(() => IdxReader.Read(Path.Combine(_dir, "absent"))).Message);
    }

    [Fact]
    public void Label_count_must_match_image_count()
    {
        WriteMnistFolder(false);
        Write("train-labels-idx1-ubyte", Idx([2], [0, 1]));
        var e = Assert.Throws<DataFormatException>(() => IdxReader.LoadMnistFolder(_dir, PixelNormalization.UnitRange));
        Assert.Contains("2 labels for 3 images", e.Message);
    }

    [Fact]
    public void Missing_folder_suggests_the_debian_package()
    {
        var e = Assert.Throws<DataFormatException>(() => IdxReader.LoadMnistFolder(Path.Combine(_dir, "nope"), PixelNormalization.UnitRange));
        Assert.Contains("dataset-fashion-mnist", e.Message);
    }

    [FashionMnistFact]
    public void Reads_the_installed_fashion_mnist()
    {
        var (train, test) = IdxReader.LoadMnistFolder(FashionMnistFactAttribute.Folder, PixelNormalization.UnitRange);
        Assert.Equal((60000, 784, 10), (train.Count, train.FeatureCount, train.Classes));
        Assert.Equal(10000, test.Count);
        Assert.All(Enumerable.Range(0, 10), k => Assert.Equal(6000, train.Labels!.Count(y => y == k)));
        Assert.InRange(train.Features.Average(v => (double)v), 0.28, 0.29); // published mean 0.2860
    }
}

/// <summary>Runs only where Debian's dataset-fashion-mnist is installed (CI installs it).</summary>
public sealed class FashionMnistFactAttribute : FactAttribute
{
    public const string Folder = "/usr/share/datasets/fashion-mnist";

    public FashionMnistFactAttribute()
    {
        if (!File.Exists(Path.Combine(Folder, "train-images-idx3-ubyte.gz")))
            Skip = $"Fashion-MNIST is not installed in {Folder} (apt-get install dataset-fashion-mnist)";
    }
}
